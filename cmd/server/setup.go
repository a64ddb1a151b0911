package main

// setup creates the service's GitHub App through GitHub's App-manifest
// flow: a one-page form on loopback posts the manifest to GitHub, the
// organization's owner confirms there, GitHub sends the browser back with
// a code, and the code is exchanged for the App's id, key and webhook
// secret, which are written next to a new config.

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	texttemplate "text/template"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/deployments"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
)

const setupUsage = `  setup --org ORG --webhook-url URL [--github-url URL] [--dir DIR] [--owner USER]
                           create the GitHub App from the manifest, through
                           GitHub's App-manifest flow, with a form served on
                           loopback (--listen); write its key and webhook
                           secret (mode 0600) and a config with its id into
                           DIR (default /etc/lxd-gha-autoscaler), never over
                           an existing file; print where to install it
`

// Defaults of setup's flags.
const (
	setupDir       = "/etc/lxd-gha-autoscaler"
	setupListen    = "127.0.0.1:8976"
	setupGitHubURL = "https://github.com"
	// GitHub's manifest code lives an hour: so may the whole flow.
	setupTimeout = time.Hour
)

// setupFiles are what setup writes into its directory.
var setupFiles = struct{ key, secret, config string }{"app.pem", "webhook-secret", "config.yaml"}

type setupOptions struct {
	org, webhookURL, githubURL, dir, owner, name, manifest, listen string
	timeout                                                        time.Duration
	// ready, when set, is told the form's URL once it is served (tests).
	ready func(formURL string)
}

func setupCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("setup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o setupOptions
	fs.StringVar(&o.org, "org", "", "the organization that will own the App and install it (required)")
	fs.StringVar(&o.webhookURL, "webhook-url", "", "where GitHub sends the App's webhooks: your proxy's https://HOST/webhook (required)")
	fs.StringVar(&o.githubURL, "github-url", setupGitHubURL, "GitHub: https://github.com, or a GitHub Enterprise Server's https://HOST")
	fs.StringVar(&o.dir, "dir", setupDir, "where to write "+setupFiles.key+", "+setupFiles.secret+" and "+setupFiles.config)
	fs.StringVar(&o.owner, "owner", "", "the service's user: the secret files are made its own, the config readable by its group (needs root)")
	fs.StringVar(&o.name, "name", "", "the App's name, unique on GitHub, at most 34 characters (default lxd-gha-autoscaler-ORG)")
	fs.StringVar(&o.manifest, "manifest", "", "the App manifest (default: deployments/github-app/manifest.json, built in)")
	fs.StringVar(&o.listen, "listen", setupListen, "loopback address of the form; from another machine: ssh -L PORT:127.0.0.1:PORT HOST")
	fs.DurationVar(&o.timeout, "timeout", setupTimeout, "give up after this long (GitHub's code lives an hour)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{"setup: unexpected " + fs.Arg(0)}
	}
	return setup(ctx, o, stdout)
}

// loginRE is a GitHub login: letters, digits and single inner hyphens.
var loginRE = regexp.MustCompile(`^[A-Za-z0-9](?:-?[A-Za-z0-9])*$`)

// setupPlan is what setup was asked, checked.
type setupPlan struct {
	setupOptions
	web      *url.URL // GitHub's web root, no trailing slash
	api      string   // its REST base URL, with a trailing slash
	manifest []byte   // filled in
	state    string
	uid, gid int // -1: leave the files the caller's
	paths    struct{ key, secret, config string }
}

func newSetupPlan(o setupOptions) (*setupPlan, error) {
	p := &setupPlan{setupOptions: o, uid: -1, gid: -1}
	var errs []error
	if !loginRE.MatchString(o.org) || len(o.org) > 39 {
		errs = append(errs, fmt.Errorf("--org %q: want the organization's login", o.org))
	}
	if err := checkURL("--webhook-url", o.webhookURL); err != nil {
		errs = append(errs, err)
	}
	if err := checkURL("--github-url", o.githubURL); err != nil {
		errs = append(errs, err)
	} else {
		p.web, _ = url.Parse(strings.TrimRight(o.githubURL, "/"))
		if strings.EqualFold(p.web.Host, "github.com") {
			p.api = "https://api.github.com/"
		} else { // GitHub Enterprise Server, or a stand-in
			p.api = p.web.String() + "/api/v3/"
		}
	}
	if p.name == "" {
		p.name = "lxd-gha-autoscaler-" + o.org
	}
	if len(p.name) > 34 {
		errs = append(errs, fmt.Errorf("the App's name %q is longer than GitHub's 34 characters: pass --name", p.name))
	}
	host, _, err := net.SplitHostPort(o.listen)
	if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
		errs = append(errs, fmt.Errorf("--listen %q: want a loopback host:port: the form and GitHub's answer are for this machine's browser (or an ssh -L tunnel) only", o.listen))
	}
	if o.owner != "" {
		u, err := user.Lookup(o.owner)
		if err != nil {
			errs = append(errs, fmt.Errorf("--owner: %w", err))
		} else {
			p.uid, _ = strconv.Atoi(u.Uid)
			p.gid, _ = strconv.Atoi(u.Gid)
		}
	}
	p.dir, _ = filepath.Abs(o.dir)
	p.paths.key = filepath.Join(p.dir, setupFiles.key)
	p.paths.secret = filepath.Join(p.dir, setupFiles.secret)
	p.paths.config = filepath.Join(p.dir, setupFiles.config)
	for _, f := range []string{p.paths.key, p.paths.secret, p.paths.config} {
		if _, err := os.Lstat(f); err == nil {
			errs = append(errs, fmt.Errorf("%s exists: setup never overwrites a file; move it away, or pass another --dir", f))
		} else if !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("setup:\n%w", err)
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	p.state = hex.EncodeToString(b)
	return p, nil
}

// checkURL wants https, or http to a loopback address (a test's stand-in
// or service).
func checkURL(flag, raw string) error {
	u, err := url.Parse(raw)
	switch {
	case raw == "":
		return fmt.Errorf("%s is required", flag)
	case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		return fmt.Errorf("%s %q: want https://HOST...", flag, raw)
	case u.Scheme == "http" && admin.RequiresToken(net.JoinHostPort(u.Hostname(), "0")):
		return fmt.Errorf("%s %q: must be https (http only on loopback)", flag, raw)
	}
	return nil
}

// fillManifest fills the manifest in for this App: its name, owner,
// webhook URL, and the loopback page GitHub sends the browser back to.
// Keys it does not know are kept as they are.
func (p *setupPlan) fillManifest(raw []byte, redirect string) error {
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("the App manifest: %w", err)
	}
	m["name"] = p.name
	m["url"] = p.web.String() + "/" + p.org
	if d, ok := m["description"].(string); ok {
		m["description"] = strings.ReplaceAll(d, "ORG", p.org)
	}
	hook, _ := m["hook_attributes"].(map[string]any)
	if hook == nil {
		hook = map[string]any{"active": true}
	}
	hook["url"] = p.webhookURL
	m["hook_attributes"] = hook
	m["redirect_url"] = redirect
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	p.manifest = b
	return nil
}

// setupApp is what GitHub's conversion answers, of what setup keeps.
type setupApp struct {
	ID            int64  `json:"id"`
	Slug          string `json:"slug"`
	Name          string `json:"name"`
	HTMLURL       string `json:"html_url"`
	PEM           string `json:"pem"`
	WebhookSecret string `json:"webhook_secret"`
}

func setup(ctx context.Context, o setupOptions, stdout io.Writer) error {
	p, err := newSetupPlan(o)
	if err != nil {
		return err
	}
	raw := deployments.AppManifest
	if o.manifest != "" {
		if raw, err = os.ReadFile(o.manifest); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	if err := p.mkdir(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	base := "http://" + ln.Addr().String()
	if err := p.fillManifest(raw, base+"/callback"); err != nil {
		ln.Close()
		return fmt.Errorf("setup: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	h := &setupHandler{p: p, done: make(chan setupResult, 1)}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	fmt.Fprintf(stdout, `Creating the GitHub App %s for %s, with the webhook URL %s.

Open %s/ in a browser logged in to %s as an owner of %s, and follow it.
From another machine: ssh -L %s:127.0.0.1:%s THIS-HOST, then open the same address there.
Waiting (at most %s)...
`, p.name, p.org, p.webhookURL, base, p.web.Host, p.org, port, port, o.timeout)
	if o.ready != nil {
		o.ready(base + "/")
	}
	select {
	case <-ctx.Done():
		return fmt.Errorf("setup: no App was created: %w", ctx.Err())
	case r := <-h.done:
		// Let the browser get its page before the server closes.
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
		if r.err != nil {
			return fmt.Errorf("setup: %w", r.err)
		}
		fmt.Fprint(stdout, r.message)
		return nil
	}
}

// mkdir makes the directory when it is missing: 0750, the owner's group.
// It must be writable before GitHub makes an App whose key would be lost.
func (p *setupPlan) mkdir() error {
	if _, err := os.Stat(p.dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(p.dir, 0o750); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
		if p.gid >= 0 {
			if err := os.Chown(p.dir, -1, p.gid); err != nil {
				return fmt.Errorf("setup: %w", err)
			}
		}
	}
	probe, err := os.CreateTemp(p.dir, ".setup-probe-")
	if err != nil {
		return fmt.Errorf("setup: cannot write into %s: %w", p.dir, err)
	}
	probe.Close()
	return os.Remove(probe.Name())
}

type setupResult struct {
	message string
	err     error
}

// setupHandler serves the form and takes GitHub's answer, once.
type setupHandler struct {
	p    *setupPlan
	once sync.Mutex
	used bool
	done chan setupResult
}

func (h *setupHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Only this machine's browser: refuse a page whose name resolves to
	// 127.0.0.1 (DNS rebinding).
	host := r.Host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		host = hh
	}
	if ip := net.ParseIP(strings.Trim(host, "[]")); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		http.Error(w, "setup answers on loopback only", http.StatusForbidden)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// No script; the one form may go to GitHub only.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action "+h.p.web.Scheme+"://"+h.p.web.Host+"; frame-ancestors 'none'")
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/":
		h.form(w)
	case r.Method == http.MethodGet && r.URL.Path == "/callback":
		h.callback(w, r)
	default:
		http.NotFound(w, r)
	}
}

var setupPage = template.Must(template.New("setup").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>lxd-gha-autoscaler setup</title>
<style>body{font:15px/1.5 system-ui,sans-serif;margin:2em;max-width:46em;color:#222}
th{text-align:left;padding-right:1em;vertical-align:top}td{font-family:monospace}
button{font-size:1.05em;padding:.4em 1em}.err{color:#c62828}</style></head>
<body><h1>{{.Title}}</h1>
{{if .Form}}<p>This creates the service's GitHub App on {{.Host}}, owned by {{.Org}}. GitHub asks you to confirm,
then sends you back here, and the command that serves this page writes the App's key and webhook secret.</p>
<table>
<tr><th>name</th><td>{{.Name}}</td></tr>
<tr><th>webhook URL</th><td>{{.Hook}}</td></tr>
<tr><th>permissions</th><td>{{.Permissions}}</td></tr>
<tr><th>events</th><td>{{.Events}}</td></tr>
</table>
<form method="post" action="{{.Action}}">
<input type="hidden" name="manifest" value="{{.Manifest}}">
<p><button type="submit" id="create">Create the GitHub App on {{.Host}}</button></p>
</form>
{{else}}<p id="result"{{if .Error}} class="err"{{end}}>{{.Text}}</p>
{{if .Install}}<p><a id="install" href="{{.Install}}">{{.Install}}</a></p>{{end}}
{{end}}</body></html>
`))

type setupPageData struct {
	Title, Text, Install                                         string
	Error, Form                                                  bool
	Host, Org, Name, Hook, Permissions, Events, Action, Manifest string
}

func (h *setupHandler) form(w http.ResponseWriter) {
	var m struct {
		Permissions map[string]string `json:"default_permissions"`
		Events      []string          `json:"default_events"`
	}
	_ = json.Unmarshal(h.p.manifest, &m) // ours, filled in
	var perms []string
	for k, v := range m.Permissions {
		perms = append(perms, k+": "+v)
	}
	slices.Sort(perms)
	action := h.p.web.String() + "/organizations/" + url.PathEscape(h.p.org) + "/settings/apps/new?state=" + h.p.state
	h.page(w, http.StatusOK, setupPageData{Title: "Create the GitHub App", Form: true, Host: h.p.web.Host, Org: h.p.org,
		Name: h.p.name, Hook: h.p.webhookURL, Permissions: strings.Join(perms, ", "), Events: strings.Join(m.Events, ", "),
		Action: action, Manifest: string(h.p.manifest)})
}

func (h *setupHandler) page(w http.ResponseWriter, status int, d setupPageData) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = setupPage.Execute(w, d)
}

// callback takes GitHub's redirect: the state must be this setup's, and
// the code is exchanged once.
func (h *setupHandler) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	code, state := q.Get("code"), q.Get("state")
	if subtle.ConstantTimeCompare([]byte(state), []byte(h.p.state)) != 1 {
		// Not from GitHub for this setup (or an old tab): keep waiting.
		h.page(w, http.StatusBadRequest, setupPageData{Title: "Not this setup's answer", Error: true,
			Text: "The state GitHub sent back is not this setup's: this address was not reached through the form this command serves. Nothing was done; start from the form again."})
		return
	}
	if code == "" || len(code) > 100 || strings.ContainsAny(code, "/?#%") {
		h.page(w, http.StatusBadRequest, setupPageData{Title: "No code", Error: true, Text: "GitHub's answer holds no usable code: start from the form again."})
		return
	}
	h.once.Lock()
	defer h.once.Unlock()
	if h.used {
		h.page(w, http.StatusConflict, setupPageData{Title: "Already done", Text: "This setup has already taken GitHub's answer: see the command's output."})
		return
	}
	h.used = true
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	app, err := h.p.convert(ctx, code)
	if err == nil {
		err = h.p.write(app)
	}
	if err != nil {
		h.page(w, http.StatusBadGateway, setupPageData{Title: "Setup failed", Error: true, Text: err.Error()})
		h.done <- setupResult{err: err}
		return
	}
	install := strings.TrimRight(app.HTMLURL, "/") + "/installations/new"
	h.page(w, http.StatusOK, setupPageData{Title: "The GitHub App is created", Install: install,
		Text: fmt.Sprintf("%s (id %d) is created, and its key, webhook secret and a config are in %s. Now install it on %s, for all repositories:",
			app.Slug, app.ID, h.p.dir, h.p.org)})
	h.done <- setupResult{message: h.p.summary(app, install)}
}

// convert exchanges the code for the App: POST /app-manifests/{code}/conversions,
// which needs no credentials and answers once.
func (p *setupPlan) convert(ctx context.Context, code string) (setupApp, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.api+"app-manifests/"+url.PathEscape(code)+"/conversions", nil)
	if err != nil {
		return setupApp{}, err
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	req.Header.Set("User-Agent", "lxd-gha-autoscaler-setup")
	client := &http.Client{Timeout: time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err // the URL holds the code
		}
		return setupApp{}, fmt.Errorf("exchange GitHub's code at %s: %w", p.api, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return setupApp{}, fmt.Errorf("exchange GitHub's code: %w", err)
	}
	if resp.StatusCode != http.StatusCreated {
		var e struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(body, &e)
		return setupApp{}, fmt.Errorf("exchange GitHub's code: %s %q: the code is good once, for an hour: start again", resp.Status, admin.Printable(e.Message))
	}
	var app setupApp
	if err := json.Unmarshal(body, &app); err != nil {
		return setupApp{}, fmt.Errorf("exchange GitHub's code: %w", err)
	}
	if app.ID <= 0 || app.PEM == "" || app.WebhookSecret == "" || app.HTMLURL == "" {
		return setupApp{}, fmt.Errorf("exchange GitHub's code: the answer lacks the App's id, key, webhook secret or page")
	}
	return app, nil
}

// write writes the key and the webhook secret, the owner's alone, and the
// config, never over a file: a file that appeared meanwhile fails it.
func (p *setupPlan) write(app setupApp) error {
	rescue := fmt.Sprintf(" (the App %s exists at GitHub: delete it at %s/advanced, or generate a new key there)", app.Slug, strings.TrimRight(app.HTMLURL, "/"))
	if err := p.create(p.paths.key, []byte(app.PEM), 0o600, true); err != nil {
		return fmt.Errorf("%w%s", err, rescue)
	}
	if err := p.create(p.paths.secret, []byte(app.WebhookSecret+"\n"), 0o600, true); err != nil {
		return fmt.Errorf("%w%s", err, rescue)
	}
	cfg, err := p.config(app)
	if err != nil {
		return err
	}
	mode := os.FileMode(0o644)
	if p.gid >= 0 {
		mode = 0o640
	}
	if err := p.create(p.paths.config, cfg, mode, false); err != nil {
		return fmt.Errorf("%w: github.app_id is %d", err, app.ID)
	}
	return nil
}

// create writes a new file; a secret is given to the owner, the config to
// the owner's group.
func (p *setupPlan) create(path string, b []byte, mode os.FileMode, secret bool) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	if err := f.Chmod(mode); err != nil { // whatever the umask
		return err
	}
	if p.uid >= 0 {
		uid := p.uid
		if !secret {
			uid = -1 // the config stays its writer's, readable by the group
		}
		if err := f.Chown(uid, p.gid); err != nil {
			return err
		}
	}
	_, err = f.Write(b)
	return err
}

// setupConfig is YAML: the values that may hold anything are quoted as
// JSON strings, which YAML reads alike.
var setupConfig = texttemplate.Must(texttemplate.New("config").Funcs(texttemplate.FuncMap{
	"q": func(s string) string { b, _ := json.Marshal(s); return string(b) },
}).Parse(`# Written by lxd-gha-autoscaler setup for the GitHub App {{.Slug}} (id {{.ID}}).
# Every key, with comments: deployments/config.example.yaml. Check the
# whole setup with: lxd-gha-autoscaler doctor --config {{.Config}}

listen: 127.0.0.1:8080
admin_listen: unix:/run/lxd-gha-autoscaler/admin.sock
state_dir: /var/lib/lxd-gha-autoscaler
runner_prefix: gha-

github:
  api_url: {{q .API}}
  app_id: {{.ID}}
  private_key_file: {{q .Key}}
  webhook_secret_file: {{q .Secret}}
  runner_group: Default

lxd:
  socket: {{q .Socket}}
  project: default

limits:
  max_instances: 4

# A queued job goes to the first pool whose labels include all of its
# runs-on labels. Change the labels, the image and the limits to yours.
pools:
  - name: linux-x64
    labels: [self-hosted, linux, x64]
    image: gha-runner
    profiles: [hardened-container]
    max_instances: 4

# The runner image that "lxd-gha-autoscaler image build gha-runner" makes
# (see deployments/README.md): uncomment, with the runner's version and its
# tarball's sha256 from https://github.com/actions/runner/releases.
# images:
#   - name: gha-runner
#     source: debian12
#     runner:
#       version: RUNNER_VERSION
#       sha256: RUNNER_SHA256
#     steps: [steps/base.sh]
`))

// config is the new config: the App's id and files, the LXD socket found
// here, and one pool.
func (p *setupPlan) config(app setupApp) ([]byte, error) {
	socket := defaultSocket
	for _, s := range []string{defaultSocket, "/var/snap/lxd/common/lxd/unix.socket"} {
		if _, err := os.Stat(s); err == nil {
			socket = s
			break
		}
	}
	var b strings.Builder
	err := setupConfig.Execute(&b, map[string]any{"Slug": app.Slug, "ID": app.ID, "API": p.api, "Key": p.paths.key,
		"Secret": p.paths.secret, "Socket": socket, "Config": p.paths.config})
	return []byte(b.String()), err
}

func (p *setupPlan) summary(app setupApp, install string) string {
	owner := ""
	if p.owner != "" {
		owner = ", owner " + p.owner
	}
	return fmt.Sprintf(`
Created the GitHub App %s (id %d): %s
Wrote %s and %s (mode 0600%s) and %s (github.app_id: %d).

Next:
  1. Install the App on %s, for all repositories:
     %s
  2. Edit %s: the pools and the runner image.
  3. lxd-gha-autoscaler doctor --config %s --webhook-url %s
`, app.Slug, app.ID, app.HTMLURL, p.paths.key, p.paths.secret, owner, p.paths.config, app.ID,
		p.org, install, p.paths.config, p.paths.config, p.webhookURL)
}
