package main

// doctor checks a setup from end to end, one line per check, with what to
// do when one fails: what `validate` cannot see (LXD, GitHub, the running
// service, the proxy) and an operator would otherwise learn only when the
// first job waits forever.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghapp"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/scheduler"
)

const doctorUsage = `  doctor --config FILE [--webhook-url URL]
                           check a setup, one line per check, with what to do
                           when one fails: the config and its secret files;
                           LXD, the project, each pool's image or source
                           instance, profiles, storage pool and
                           security.devlxd; the App's JWT, its installations
                           and runner groups; the running service's admin API
                           and the last webhook it received; with
                           --webhook-url, a signed ping through the proxy.
                           Exits non-zero when a check fails.
                           validate --live is the same.
`

// doctorTimeout bounds each check that asks LXD, GitHub or the service.
const doctorTimeout = 30 * time.Second

// doctor prints one line per check and counts the failures.
type doctor struct {
	w       io.Writer
	path    string
	timeout time.Duration
	failed  int
}

// line prints "STATUS name: msg", the message's further lines indented.
func (d *doctor) line(status, name, msg string) {
	msg = strings.ReplaceAll(strings.TrimRight(msg, "\n"), "\n", "\n      ")
	fmt.Fprintf(d.w, "%-5s %s: %s\n", status, name, msg)
}

func (d *doctor) ok(name, format string, args ...any) {
	d.line("ok", name, fmt.Sprintf(format, args...))
}
func (d *doctor) warn(name, msg string) { d.line("warn", name, msg) }
func (d *doctor) skip(name, why string) { d.line("skip", name, why) }

// fail prints what is wrong and, when known, what to do.
func (d *doctor) fail(name, problem, fix string) {
	d.failed++
	if fix != "" {
		problem += ": " + fix
	}
	d.line("FAIL", name, problem)
}

func (d *doctor) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.timeout)
}

// runDoctor checks the setup that the config at path describes. webhookURL,
// when set, is pinged through the proxy.
func runDoctor(ctx context.Context, path, webhookURL string, timeout time.Duration, w io.Writer) error {
	d := &doctor{w: w, path: path, timeout: timeout}
	var loose []error
	cfg, err := loadConfigLoose(path, &loose)
	if err != nil {
		d.fail("config", path+" is not valid:\n"+err.Error()+
			"\nfix each line above (validate --config "+path+" lists the same), as a user who may read the files it names", "")
		d.skip("the other checks", "they need a valid config")
		return d.result()
	}
	d.ok("config", "%s: %d pools, state %s", path, len(cfg.App.Scheduler.Pools), stateWhere(cfg))
	for _, s := range cfg.Warnings {
		d.warn("config", s)
	}
	if len(loose) > 0 {
		for _, e := range loose {
			d.fail("secret files", e.Error(), "")
		}
	} else {
		d.ok("secret files", "%s: the owner's alone", strings.Join(cfg.SecretFiles, ", "))
	}
	d.checkLXD(ctx, cfg)
	appWebhook := d.checkGitHub(ctx, cfg)
	client, last := d.checkService(ctx)
	d.checkWebhookURL(ctx, cfg, webhookURL, appWebhook, client, last)
	return d.result()
}

func stateWhere(cfg *config) string {
	if cfg.Database != "" {
		return "PostgreSQL"
	}
	return "SQLite in " + cfg.StateDir
}

func (d *doctor) result() error {
	if d.failed > 0 {
		return fmt.Errorf("doctor: %d check(s) failed", d.failed)
	}
	fmt.Fprintln(d.w, "doctor: all checks passed")
	return nil
}

// checkLXD: LXD answers, the project exists, and each pool has what it
// launches from, its profiles, a root disk on a storage pool that
// exists, and /dev/lxd for the runner.
func (d *doctor) checkLXD(ctx context.Context, cfg *config) {
	where, fix := "lxd.socket "+cfg.LXD.Socket,
		"is LXD running (systemctl status lxd, or snap services lxd), and lxd.socket its socket "+
			"(deb: /var/lib/lxd/unix.socket, snap: /var/snap/lxd/common/lxd/unix.socket)? "+
			"The service's user must be in the socket's group (stat -c %G SOCKET)"
	if cfg.LXD.URL != "" {
		where, fix = "lxd.url "+cfg.LXD.URL,
			"is lxd.url reachable from here, and the client certificate trusted by LXD (lxc config trust add on the server)?"
	}
	project := cfg.LXD.Project
	if project == "" {
		project = lxd.DefaultProject
	}
	cctx, cancel := d.ctx(ctx)
	defer cancel()
	c, err := lxd.Connect(cctx, cfg.LXD)
	switch {
	case errors.Is(err, fleet.ErrNotFound): // LXD answered: the project is missing
		d.ok("lxd", "%s answers", where)
		d.fail("lxd project", err.Error(), "create it (lxc project create "+project+") or set lxd.project to an existing one (lxc project list)")
		d.skip("pools", "they need the project")
		return
	case err != nil:
		d.fail("lxd", err.Error(), fix)
		d.skip("pools", "they need LXD")
		return
	}
	d.ok("lxd", "%s answers", where)
	d.ok("lxd project", "%s", project)
	for _, p := range cfg.App.Scheduler.Pools {
		d.checkPool(ctx, c, p)
	}
}

func (d *doctor) checkPool(ctx context.Context, c *lxd.Client, p scheduler.Pool) {
	ctx, cancel := d.ctx(ctx)
	defer cancel()
	name := "pool " + p.Name
	typ := p.Type
	if typ == "" {
		typ = "container"
	}
	if p.Image != "" {
		img, err := c.Image(ctx, p.Image)
		switch {
		case errors.Is(err, fleet.ErrNotFound):
			d.fail(name+": image", p.Image+" is not in LXD",
				"build it (lxd-gha-autoscaler image build "+p.Image+" --config "+d.path+", with the image in the config's images:), or import it under that alias")
		case err != nil:
			d.fail(name+": image", err.Error(), "")
		case img.Type != "" && img.Type != typ:
			d.fail(name+": image", fmt.Sprintf("%s is a %s image, and the pool's type is %s", p.Image, img.Type, typ),
				"build the image with type: "+typ+", or set the pool's type: "+img.Type)
		default:
			d.ok(name+": image", "%s (%s, %s)", p.Image, img.Type, img.Architecture)
		}
	} else {
		_, err := c.Get(ctx, p.SourceInstance)
		switch {
		case errors.Is(err, fleet.ErrNotFound):
			d.fail(name+": source instance", p.SourceInstance+" is not in LXD",
				"make it (lxc init IMAGE "+p.SourceInstance+", then lxd-gha-autoscaler image prepare "+p.SourceInstance+" --config "+d.path+" --image IMAGE)")
		case err != nil:
			d.fail(name+": source instance", err.Error(), "")
		default:
			d.ok(name+": source instance", "%s", p.SourceInstance)
		}
	}

	// A launch from an image with no profiles gets LXD's default profile;
	// a copy keeps its source's, which doctor does not read.
	names := p.Profiles
	if len(names) == 0 {
		if p.Image == "" {
			d.skip(name+": profiles", "a copy of "+p.SourceInstance+" keeps its profiles")
			return
		}
		names = []string{"default"}
	}
	var profiles []lxd.Profile
	var missing []string
	for _, pn := range names {
		pr, err := c.Profile(ctx, pn)
		switch {
		case errors.Is(err, fleet.ErrNotFound):
			missing = append(missing, pn)
		case err != nil:
			d.fail(name+": profiles", err.Error(), "")
			return
		default:
			profiles = append(profiles, pr)
		}
	}
	if len(missing) > 0 {
		d.fail(name+": profiles", "not in LXD: "+strings.Join(missing, ", "),
			"create each (lxc profile create NAME; lxc profile edit NAME < FILE: deployments/lxd has the hardened container's), or change pools[].profiles")
		d.skip(name+": storage pool", "it needs the profiles")
		d.skip(name+": security.devlxd", "it needs the profiles")
		return
	}
	d.ok(name+": profiles", "%s", strings.Join(names, ", "))

	// The root disk: the last profile's that has one wins, as LXD expands
	// profiles in order.
	var root, from string
	for _, pr := range profiles {
		for _, dev := range pr.Devices {
			if dev["type"] == "disk" && dev["path"] == "/" {
				root, from = dev["pool"], pr.Name
			}
		}
	}
	switch {
	case from == "":
		d.fail(name+": storage pool", "no root disk in the profiles "+strings.Join(names, ", "),
			"add one (lxc profile device add PROFILE root disk path=/ pool=POOL; lxc storage list names the pools), or add the default profile first")
	default:
		if err := c.StoragePool(ctx, root); err != nil {
			d.fail(name+": storage pool", fmt.Sprintf("%s (the root disk of profile %s): %v", root, from, err),
				"point the root disk at a pool that exists (lxc storage list), or create it")
		} else {
			d.ok(name+": storage pool", "%s (the root disk of profile %s)", root, from)
		}
	}

	// The runner reads its JIT config through /dev/lxd/sock: the pool's
	// config wins over the profiles, the last profile over the others.
	val, set := "", ""
	for _, pr := range profiles {
		if v, ok := pr.Config["security.devlxd"]; ok {
			val, set = v, "profile "+pr.Name
		}
	}
	if v, ok := p.Config["security.devlxd"]; ok {
		val, set = v, "the pool's config"
	}
	if isFalse(val) {
		d.fail(name+": security.devlxd", "off, in "+set,
			"the runner reads its JIT config through /dev/lxd/sock: remove security.devlxd there, or set it to true")
	} else {
		d.ok(name+": security.devlxd", "on")
	}
}

// checkGitHub: GitHub takes the App's JWT, the App is installed on an
// organization, and each pool's runner group exists there and admits no
// more than its pool. It returns the App's webhook URL at GitHub ("" when
// unknown).
func (d *doctor) checkGitHub(ctx context.Context, cfg *config) string {
	gh, err := ghapp.New(cfg.GitHub, zerolog.Nop())
	if err != nil { // loadConfig checked the same
		d.fail("github app", err.Error(), "")
		return ""
	}
	cctx, cancel := d.ctx(ctx)
	defer cancel()
	app, err := gh.App(cctx)
	switch {
	case errors.Is(err, ghapp.ErrBadCredentials):
		d.fail("github app", fmt.Sprintf("GitHub at %s refused the JWT of App %d", cfg.GitHub.APIURL, cfg.GitHub.AppID),
			"github.app_id must be the App's id (its settings: About) and github.private_key_file one of its private keys (Private keys: Generate)")
	case err != nil:
		d.fail("github app", err.Error(), "is github.api_url ("+cfg.GitHub.APIURL+") right, and GitHub reachable from here?")
	}
	if err != nil {
		d.skip("github installations", "they need the App")
		d.skip("runner groups", "they need the App")
		return ""
	}
	d.ok("github app", "%s (id %d, owner %s): GitHub accepts its JWT", app.Slug, app.ID, app.Owner)
	hookURL, err := gh.WebhookURL(cctx)
	if err != nil {
		d.warn("github app", "cannot read its webhook URL: "+err.Error())
	}

	orgs, err := gh.Installations(cctx)
	switch {
	case err != nil:
		d.fail("github installations", err.Error(), "")
	case len(orgs) == 0:
		d.fail("github installations", "the App is installed on no organization",
			"install it: "+app.HTMLURL+"/installations/new, the organization, All repositories")
	default:
		var where []string
		for _, o := range orgs {
			where = append(where, fmt.Sprintf("%s (installation %d)", o.Login, o.InstallationID))
		}
		d.ok("github installations", "installed on %s", strings.Join(where, ", "))
	}
	if len(orgs) == 0 {
		d.skip("runner groups", "they are read in the organizations the App is installed on")
		return hookURL
	}

	sched := cfg.App.Scheduler.WithDefaults()
	groups := &doctorGroups{gh: gh, orgs: orgs, read: map[string]fleet.RunnerGroup{}}
	found := true
	for _, o := range orgs {
		var seen []string
		for _, p := range sched.Pools {
			if slices.Contains(seen, p.RunnerGroup) {
				continue
			}
			seen = append(seen, p.RunnerGroup)
			name := fmt.Sprintf("runner group %q of %s", p.RunnerGroup, o.Login)
			g, err := groups.RunnerGroup(cctx, o.InstallationID, o.Login, p.RunnerGroup)
			switch {
			case errors.Is(err, fleet.ErrNotFound):
				found = false
				d.fail(name, "does not exist", "create it in the organization's settings (Actions, Runner groups), or name an existing group (pools[].runner_group)")
			case err != nil:
				found = false
				d.fail(name, err.Error(), "")
			default:
				d.ok(name, "found (id %d): %s, public repositories %s", g.ID, groupAccess(g), onOff(g.AllowsPublicRepositories))
			}
		}
	}
	if !found {
		d.skip("runner groups", "what they admit is compared once each exists")
		return hookURL
	}
	warnings, err := scheduler.CheckRunnerGroups(cctx, cfg.App.Scheduler, groups)
	for _, w := range warnings {
		d.warn("runner groups", w)
	}
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			d.fail("runner groups", line, "")
		}
	} else {
		d.ok("runner groups", "each admits no more than its pools")
	}
	return hookURL
}

// isFalse is how LXD reads a boolean key as false.
func isFalse(v string) bool {
	switch strings.ToLower(v) {
	case "false", "0", "no", "off":
		return true
	}
	return false
}

func groupAccess(g fleet.RunnerGroup) string {
	switch g.Visibility {
	case fleet.VisibilitySelected:
		return "selected repositories (" + listUpTo(g.Repositories, 5) + ")"
	case fleet.VisibilityPrivate:
		return "every private repository"
	}
	return "every repository"
}

func listUpTo(s []string, n int) string {
	if len(s) <= n {
		return strings.Join(s, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(s[:n], ", "), len(s)-n)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// doctorGroups reads each runner group once for the doctor's own lines
// and for scheduler.CheckRunnerGroups.
type doctorGroups struct {
	gh   *ghapp.Client
	orgs []fleet.Org
	read map[string]fleet.RunnerGroup
}

func (g *doctorGroups) Installations(context.Context) ([]fleet.Org, error) { return g.orgs, nil }

func (g *doctorGroups) RunnerGroup(ctx context.Context, installationID int64, org, name string) (fleet.RunnerGroup, error) {
	k := fmt.Sprint(installationID, "/", org, "/", name)
	if v, ok := g.read[k]; ok {
		return v, nil
	}
	v, err := g.gh.RunnerGroup(ctx, installationID, org, name)
	if err == nil {
		g.read[k] = v
	}
	return v, err
}

// checkService asks the running service through its admin API, as the
// config says to reach it, and returns the client (nil when it cannot)
// and the last webhook it received (nil when none).
func (d *doctor) checkService(ctx context.Context) (*adminClient, *admin.Webhook) {
	t, err := adminFromConfig(d.path)
	if err != nil {
		d.skip("admin api", err.Error())
		d.skip("last webhook", "it is read through the admin API")
		return nil, nil
	}
	c, err := newAdminClient(t.addr, t.tokenFile, t.caFile)
	if err != nil {
		d.fail("admin api", err.Error(), "")
		d.skip("last webhook", "it is read through the admin API")
		return nil, nil
	}
	c.unanswered = "" // the fix below says what to do
	st, err := d.status(ctx, c)
	if err != nil {
		d.fail("admin api", err.Error(),
			"is the service running with this config? systemctl status lxd-gha-autoscaler; journalctl -u lxd-gha-autoscaler -n 50")
		d.skip("last webhook", "it is read through the admin API")
		return nil, nil
	}
	if st.Ready {
		d.ok("admin api", "%s answers: the service is ready", t.addr)
	} else {
		var why []string
		for k, v := range st.Checks {
			if v != admin.CheckOK {
				why = append(why, k+": "+v)
			}
		}
		slices.Sort(why)
		d.fail("admin api", t.addr+" answers: the service is not ready: "+strings.Join(why, "; "),
			"the service's log says more (journalctl -u lxd-gha-autoscaler -n 50)")
	}
	if w := st.LastWebhook; w != nil {
		d.ok("last webhook", "received at %s (%s)", adminStamp(w.At), w.Event)
	} else {
		d.warn("last webhook", "none received yet. The service has GitHub redeliver the ping it sent when the App was made "+
			"(within redeliver_interval of its start, if the App is less than 6 hours old); or send one through the proxy with --webhook-url URL")
	}
	return c, st.LastWebhook
}

func (d *doctor) status(ctx context.Context, c *adminClient) (admin.Status, error) {
	ctx, cancel := d.ctx(ctx)
	defer cancel()
	var st admin.Status
	body, err := c.call(ctx, http.MethodGet, "/api/status")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("admin API: status: %w", err)
	}
	return st.Printable(), nil
}

// checkWebhookURL sends a ping, signed with the config's webhook secret,
// to url: through the proxy to the service, which answers 204 and records
// it as its last webhook, after last. appURL is where GitHub sends the
// App's webhooks.
func (d *doctor) checkWebhookURL(ctx context.Context, cfg *config, url, appURL string, c *adminClient, last *admin.Webhook) {
	if url == "" {
		if appURL != "" {
			d.skip("webhook url", "pass --webhook-url "+appURL+" (the App's, at GitHub) to send it a signed ping through the proxy")
		} else {
			d.skip("webhook url", "pass --webhook-url URL to send a signed ping through the proxy")
		}
		return
	}
	if appURL != "" && appURL != url {
		d.warn("webhook url", "GitHub sends the App's webhooks to "+appURL+", not "+url+": change it in the App's settings (General: Webhook URL) if "+url+" is right")
	}
	code, err := d.ping(ctx, url, cfg.App.WebhookSecret)
	switch {
	case err != nil:
		d.fail("webhook url", err.Error(), "is the host name right, the port open in the firewall, and the proxy's certificate valid for it?")
		return
	case code == http.StatusUnauthorized:
		d.fail("webhook url", fmt.Sprintf("%s answered 401 to a ping signed with the secret in github.webhook_secret_file", url),
			"the service there has another secret: restart it after changing the file, or point the proxy at this one")
		return
	case code == http.StatusNotFound || code == http.StatusMethodNotAllowed:
		d.fail("webhook url", fmt.Sprintf("%s answered %d", url, code), "the proxy does not forward POST /webhook to the service (see deployments/proxy)")
		return
	case code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout:
		d.fail("webhook url", fmt.Sprintf("%s answered %d", url, code), "the proxy cannot reach the service at "+cfg.Listen+" (listen): is it running?")
		return
	case code != http.StatusNoContent:
		d.fail("webhook url", fmt.Sprintf("%s answered %d to a signed ping, not 204", url, code), "")
		return
	}
	if c == nil {
		d.ok("webhook url", "%s answered a signed ping with 204 (not checked that this service took it: no admin API)", url)
		return
	}
	st, err := d.status(ctx, c)
	switch w := st.LastWebhook; {
	case err != nil:
		d.fail("webhook url", url+" answered 204, and then the admin API did not: "+err.Error(), "")
	case w == nil || w.Event != "ping" || (last != nil && !w.At.After(last.At)):
		d.fail("webhook url", url+" answered a signed ping with 204, but this service did not receive it",
			"the URL reaches another service: check the proxy's target and the host name's address")
	default:
		d.ok("webhook url", "%s answered a signed ping with 204, and the service recorded it", url)
	}
}

// ping posts a ping as GitHub sends one, signed with secret, and returns
// the status. It follows no redirect, as GitHub does not.
func (d *doctor) ping(ctx context.Context, url string, secret []byte) (int, error) {
	ctx, cancel := d.ctx(ctx)
	defer cancel()
	body := []byte(`{"zen":"Checked by lxd-gha-autoscaler doctor.","hook_id":0}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("--webhook-url %q: %w", url, err)
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "lxd-gha-autoscaler-doctor")
	req.Header.Set("X-GitHub-Event", "ping")
	req.Header.Set("X-GitHub-Delivery", hex.EncodeToString(id))
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(m.Sum(nil)))
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, nil
}
