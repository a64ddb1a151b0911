package main

// setup creates the service's GitHub App through GitHub's App-manifest
// flow: a one-page form on loopback posts the manifest to GitHub, the
// organization's owner confirms there, GitHub sends the browser back with
// a code, and the code is exchanged for the App's id, key and webhook
// secret, which are written next to a new config.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
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
