package main

// doctor checks a setup from end to end, one line per check, with what to
// do when one fails: what `validate` cannot see (LXD, GitHub, the running
// service, the proxy) and an operator would otherwise learn only when the
// first job waits forever.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
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
	if len(cfg.LXD.URLs) > 0 {
		where, fix = "lxd.url "+strings.Join(cfg.LXD.URLs, ", "),
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
