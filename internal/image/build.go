package image

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
)

// Options tune a build; the zero value is fine.
type Options struct {
	Log          io.Writer     // progress and the steps' output; nil discards
	HTTPClient   *http.Client  // fetches the runner; default a client with a 10m timeout
	Profiles     []string      // builder and smoke instances; nil: LXD's default profile
	Compression  string        // LXD's publish compression; "" server default, "none" fastest
	ReadyTimeout time.Duration // wait for systemd in the builder; default 2m
	StopTimeout  time.Duration // clean shutdown before publish; default 1m
	Now          func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 10 * time.Minute}
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 2 * time.Minute
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Result describes a published image.
type Result struct {
	Fingerprint    string
	VersionedAlias string // NAME-YYYYMMDDhhmmss
	Properties     map[string]string
	RunnerVersion  string   // what Runner.Listener --version answered in the smoke test
	Pruned         []string // fingerprints of older images deleted
}

// cleanupTimeout bounds deleting builder and smoke instances, on a fresh
// context since the caller's may be spent.
const cleanupTimeout = 2 * time.Minute

// Build builds spec into a new image. The main alias (spec.Name) moves to
// it only after it passed the smoke test; on any failure the old alias and
// image are kept and the new image, if published, is deleted. Builder and
// smoke instances are always deleted.
func Build(ctx context.Context, c *lxd.Client, spec Spec, opts Options) (res Result, err error) {
	if err := spec.Validate(); err != nil {
		return Result{}, fmt.Errorf("image %s: invalid spec:\n%w", spec.Name, err)
	}
	digest := spec.Digest()
	spec = spec.withDefaults()
	opts = opts.withDefaults()
	logf := func(format string, args ...any) {
		fmt.Fprintf(opts.Log, "image %s: "+format+"\n", append([]any{spec.Name}, args...)...)
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("image %s: %w", spec.Name, err)
		}
	}()

	src, err := c.Image(ctx, spec.Source)
	if err != nil {
		return Result{}, fmt.Errorf("source: %w", err)
	}
	if spec.Runner.Arch == "" {
		if spec.Runner.Arch, err = runnerArch(src.Architecture); err != nil {
			return Result{}, fmt.Errorf("source %s: %w", spec.Source, err)
		}
	}

	// Fetched and checked before anything is made in LXD.
	tarball, err := fetchRunner(ctx, opts.HTTPClient, spec.Runner, logf)
	if err != nil {
		return Result{}, err
	}
	defer os.Remove(tarball)

	now := opts.Now().UTC()
	builder := spec.Name + "-build-" + suffix()
	logf("launching builder %s from %s (%s)", builder, spec.Source, short(src.Fingerprint))
	if err := c.Launch(ctx, lxd.LaunchSpec{Name: builder, Image: src.Fingerprint, Type: spec.Type, Profiles: opts.Profiles}); err != nil {
		return Result{}, err
	}
	defer func() { err = errors.Join(err, deleteInstance(ctx, c, builder)) }()

	if err := waitReady(ctx, c, builder, opts.ReadyTimeout); err != nil {
		return Result{}, err
	}
	if err := install(ctx, c, builder, spec, tarball, logf, opts.Log); err != nil {
		return Result{}, err
	}
	if err := cleanImage(ctx, c, builder); err != nil {
		return Result{}, err
	}
	logf("stopping builder")
	if err := c.Stop(ctx, builder, opts.StopTimeout); err != nil {
		return Result{}, err
	}

	res.VersionedAlias = spec.Name + "-" + now.Format("20060102150405")
	res.Properties = map[string]string{
		PropName:              spec.Name,
		PropRunnerVersion:     spec.Runner.Version,
		PropSourceFingerprint: src.Fingerprint,
		PropBuildTime:         now.Format(time.RFC3339),
		PropConfigDigest:      digest,
		"description":         fmt.Sprintf("%s: GitHub Actions runner %s, built %s", spec.Name, spec.Runner.Version, now.Format(time.RFC3339)),
	}
	if src.Properties["os"] != "" {
		res.Properties["os"] = src.Properties["os"]
	}
	if src.Properties["release"] != "" {
		res.Properties["release"] = src.Properties["release"]
	}
	logf("publishing as %s", res.VersionedAlias)
	res.Fingerprint, err = c.Publish(ctx, builder, res.Properties, []string{res.VersionedAlias}, opts.Compression)
	if err != nil {
		return Result{}, err
	}
	logf("published %s", short(res.Fingerprint))
	if err := deleteInstance(ctx, c, builder); err != nil {
		logf("warning: %v", err)
	}

	res.RunnerVersion, err = smokeTest(ctx, c, spec, res.Fingerprint, opts, logf)
	if err != nil {
		derr := deleteImage(ctx, c, res.Fingerprint)
		return Result{}, errors.Join(fmt.Errorf("smoke test of %s failed, %s not moved: %w", short(res.Fingerprint), spec.Name, err), derr)
	}
	if err := c.SetAlias(ctx, spec.Name, res.Fingerprint); err != nil {
		return Result{}, err
	}
	logf("alias %s -> %s", spec.Name, short(res.Fingerprint))

	res.Pruned, err = Prune(ctx, c, spec.Name, spec.Keep)
	if err != nil {
		return res, err
	}
	for _, fp := range res.Pruned {
		logf("pruned %s", short(fp))
	}
	return res, nil
}

// Prune deletes the images built for name beyond the keep newest, oldest
// first, never the one the alias name points to.
func Prune(ctx context.Context, c *lxd.Client, name string, keep int) ([]string, error) {
	current, err := c.AliasTarget(ctx, name)
	if err != nil {
		return nil, err
	}
	imgs, err := c.Images(ctx)
	if err != nil {
		return nil, err
	}
	var ours []lxd.ImageInfo
	for _, img := range imgs {
		if img.Properties[PropName] == name {
			ours = append(ours, img)
		}
	}
	// Oldest first by build time (then LXD's creation time).
	sortByBuild(ours)
	var pruned []string
	var errs []error
	excess := len(ours) - keep
	for _, img := range ours {
		if excess <= 0 {
			break
		}
		if img.Fingerprint == current {
			continue
		}
		if err := c.DeleteImage(ctx, img.Fingerprint); err != nil {
			errs = append(errs, err)
			continue
		}
		pruned = append(pruned, img.Fingerprint)
		excess--
	}
	return pruned, errors.Join(errs...)
}

func sortByBuild(imgs []lxd.ImageInfo) {
	key := func(i lxd.ImageInfo) time.Time {
		if t, err := time.Parse(time.RFC3339, i.Properties[PropBuildTime]); err == nil {
			return t
		}
		return i.CreatedAt
	}
	for i := 1; i < len(imgs); i++ { // insertion sort: stable, tiny lists
		for j := i; j > 0 && key(imgs[j]).Before(key(imgs[j-1])); j-- {
			imgs[j], imgs[j-1] = imgs[j-1], imgs[j]
		}
	}
}

// Prepare installs the runner, the bootstrap, the files and the steps into
// an existing instance (the source_instance workflow) without publishing.
// A stopped instance is started for it and stopped again, cleaned like an
// image; a running one is left running and not cleaned.
func Prepare(ctx context.Context, c *lxd.Client, instance string, spec Spec, opts Options) (err error) {
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("prepare %s: invalid spec:\n%w", instance, err)
	}
	spec = spec.withDefaults()
	opts = opts.withDefaults()
	logf := func(format string, args ...any) {
		fmt.Fprintf(opts.Log, "prepare %s: "+format+"\n", append([]any{instance}, args...)...)
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("prepare %s: %w", instance, err)
		}
	}()
	status, err := c.Status(ctx, instance)
	if err != nil {
		return err
	}
	wasStopped := status == "Stopped"
	if wasStopped {
		logf("starting")
		if err := c.Start(ctx, instance); err != nil {
			return err
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
			defer cancel()
			logf("stopping")
			err = errors.Join(err, c.Stop(cctx, instance, opts.StopTimeout))
		}()
	}
	if err := waitReady(ctx, c, instance, opts.ReadyTimeout); err != nil {
		return err
	}
	if spec.Runner.Arch == "" {
		arch, err := instanceArch(ctx, c, instance)
		if err != nil {
			return err
		}
		if spec.Runner.Arch, err = runnerArch(arch); err != nil {
			return err
		}
	}
	tarball, err := fetchRunner(ctx, opts.HTTPClient, spec.Runner, logf)
	if err != nil {
		return err
	}
	defer os.Remove(tarball)
	if err := install(ctx, c, instance, spec, tarball, logf, opts.Log); err != nil {
		return err
	}
	if wasStopped {
		return cleanImage(ctx, c, instance)
	}
	return nil
}

// instanceArch asks uname in a running instance.
func instanceArch(ctx context.Context, c *lxd.Client, name string) (string, error) {
	var out bytes.Buffer
	code, err := c.Exec(ctx, name, lxd.ExecSpec{Command: []string{"uname", "-m"}, Stdout: &out})
	if err != nil {
		return "", err
	}
	if code != 0 {
		return "", fmt.Errorf("uname -m: exit status %d", code)
	}
	return strings.TrimSpace(out.String()), nil
}

// fetchRunner copies the runner tarball into a host temp file and checks
// its sha256. The caller removes the file.
func fetchRunner(ctx context.Context, hc *http.Client, r RunnerSpec, logf func(string, ...any)) (string, error) {
	src := r.runnerURL()
	f, err := os.CreateTemp("", "actions-runner-*.tar.gz")
	if err != nil {
		return "", fmt.Errorf("runner: %w", err)
	}
	ok := false
	defer func() {
		f.Close()
		if !ok {
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	w := io.MultiWriter(f, h)
	logf("fetching runner %s from %s", r.Version, src)
	if path.IsAbs(src) {
		in, err := os.Open(src)
		if err != nil {
			return "", fmt.Errorf("runner: %w", err)
		}
		_, err = io.Copy(w, in)
		in.Close()
		if err != nil {
			return "", fmt.Errorf("runner: read %s: %w", src, err)
		}
	} else {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return "", fmt.Errorf("runner: %w", err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return "", fmt.Errorf("runner: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("runner: GET %s: %s", src, resp.Status)
		}
		if _, err := io.Copy(w, resp.Body); err != nil {
			return "", fmt.Errorf("runner: GET %s: %w", src, err)
		}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != r.SHA256 {
		return "", fmt.Errorf("runner: sha256 mismatch for %s: got %s, want %s (runner.sha256); nothing was built", src, got, r.SHA256)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("runner: %w", err)
	}
	ok = true
	return f.Name(), nil
}

// waitReady waits until exec works and systemd has finished booting
// (running or degraded).
func waitReady(ctx context.Context, c *lxd.Client, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		var out bytes.Buffer
		w := &lockedWriter{w: &out}
		// --wait blocks until boot is over; bounded so a hung boot is retried.
		code, err := c.Exec(ctx, name, lxd.ExecSpec{
			Command: []string{"timeout", "60", "systemctl", "is-system-running", "--wait"},
			Stdout:  w, Stderr: w,
		})
		state := strings.TrimSpace(out.String())
		switch {
		case err == nil && (state == "running" || state == "degraded"):
			return nil
		case err != nil:
			last = err.Error()
		default:
			last = fmt.Sprintf("systemctl is-system-running: %q (exit status %d)", state, code)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %s", name, timeout, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// run runs a shell command inside as root and fails on a non-zero exit,
// with the tail of its output.
func run(ctx context.Context, c *lxd.Client, name, what, script string, log io.Writer) error {
	tail := &tailBuffer{max: 4096}
	w := &lockedWriter{w: io.MultiWriter(tail, log)} // stdout and stderr are copied concurrently
	code, err := c.Exec(ctx, name, lxd.ExecSpec{
		Command: []string{"sh", "-euc", script},
		Env:     stepEnv,
		Stdout:  w, Stderr: w,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if code != 0 {
		return fmt.Errorf("%s: exit status %d; output tail:\n%s", what, code, tail.String())
	}
	return nil
}

var stepEnv = map[string]string{
	"PATH":            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME":            "/root",
	"LANG":            "C.UTF-8",
	"DEBIAN_FRONTEND": "noninteractive",
}

func push(ctx context.Context, c *lxd.Client, name, dst string, data io.ReadSeeker, mode int) error {
	return c.PushFile(ctx, name, dst, data, 0, 0, mode)
}

// install puts the runner, its user, the bootstrap, the files and the
// operator's steps into a running instance.
func install(ctx context.Context, c *lxd.Client, name string, spec Spec, tarball string, logf func(string, ...any), log io.Writer) error {
	logf("installing runner %s into %s", spec.Runner.Version, RunnerDir)
	f, err := os.Open(tarball)
	if err != nil {
		return fmt.Errorf("runner: %w", err)
	}
	err = push(ctx, c, name, "/tmp/actions-runner.tar.gz", f, 0o600)
	f.Close()
	if err != nil {
		return err
	}
	if err := run(ctx, c, name, "unpack runner", `
id -u `+RunnerUser+` >/dev/null 2>&1 || useradd --create-home --shell /bin/bash --user-group `+RunnerUser+`
rm -rf `+RunnerDir+`
mkdir -p `+RunnerDir+`
tar -xzf /tmp/actions-runner.tar.gz -C `+RunnerDir+`
rm -f /tmp/actions-runner.tar.gz
test -x `+RunnerDir+`/run.sh || { echo "no executable run.sh in the runner tarball" >&2; exit 1; }
chown -R `+RunnerUser+`:`+RunnerUser+` `+RunnerDir+`
`, log); err != nil {
		return err
	}

	logf("installing the bootstrap")
	if err := run(ctx, c, name, "bootstrap directories", "mkdir -p "+path.Dir(BootstrapPath)+" "+path.Dir(BootstrapUnitPath), log); err != nil {
		return err
	}
	if err := push(ctx, c, name, BootstrapPath, bytes.NewReader(Bootstrap), 0o755); err != nil {
		return err
	}
	if err := push(ctx, c, name, BootstrapUnitPath, bytes.NewReader(BootstrapService), 0o644); err != nil {
		return err
	}
	if err := run(ctx, c, name, "enable bootstrap", "systemctl daemon-reload && systemctl enable "+BootstrapUnit, log); err != nil {
		return err
	}

	for i, fs := range spec.Files {
		logf("file %s -> %s", fs.Src, fs.Dst)
		st, err := os.Stat(fs.Src)
		if err != nil {
			return fmt.Errorf("files[%d]: %w", i, err)
		}
		mode := fs.Mode
		if mode == 0 {
			mode = st.Mode().Perm()
		}
		if err := run(ctx, c, name, fmt.Sprintf("files[%d]: mkdir", i), "mkdir -p "+shellQuote(path.Dir(fs.Dst)), log); err != nil {
			return err
		}
		h, err := os.Open(fs.Src)
		if err != nil {
			return fmt.Errorf("files[%d]: %w", i, err)
		}
		err = push(ctx, c, name, fs.Dst, h, int(mode))
		h.Close()
		if err != nil {
			return fmt.Errorf("files[%d]: %w", i, err)
		}
	}

	for i, step := range spec.Steps {
		logf("step %d: %s", i+1, step)
		script, err := os.ReadFile(step)
		if err != nil {
			return fmt.Errorf("step %d (%s): %w", i+1, step, err)
		}
		dst := fmt.Sprintf("/tmp/gha-image-step-%d.sh", i+1)
		if err := push(ctx, c, name, dst, bytes.NewReader(script), 0o700); err != nil {
			return fmt.Errorf("step %d (%s): %w", i+1, step, err)
		}
		if err := run(ctx, c, name, fmt.Sprintf("step %d (%s)", i+1, step), "cd /root; rc=0; sh -eu "+dst+" || rc=$?; rm -f "+dst+"; exit $rc", log); err != nil {
			return err
		}
	}
	return nil
}

// cleanScript makes an instance fit to be an image: no caches, no identity,
// no logs, no temp files.
const cleanScript = `
if command -v apt-get >/dev/null 2>&1; then apt-get clean; fi
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
if command -v cloud-init >/dev/null 2>&1; then cloud-init clean --logs || true; fi
rm -rf /var/lib/cloud/instances /var/lib/cloud/instance /var/lib/cloud/data /var/lib/cloud/sem
rm -f /etc/ssh/ssh_host_*
if [ -f /etc/machine-id ]; then : > /etc/machine-id; fi
rm -f /var/lib/dbus/machine-id
find /var/log -type f -name '*.log' -exec truncate -s 0 {} +
find /tmp /var/tmp -mindepth 1 -delete
`

func cleanImage(ctx context.Context, c *lxd.Client, name string) error {
	return run(ctx, c, name, "clean up", cleanScript, io.Discard)
}

// smokeTest launches an ephemeral instance from fp without a runner config
// and checks the bootstrap is enabled and the runner answers.
func smokeTest(ctx context.Context, c *lxd.Client, spec Spec, fp string, opts Options, logf func(string, ...any)) (string, error) {
	name := spec.Name + "-smoke-" + suffix()
	logf("smoke test in %s", name)
	if err := c.Launch(ctx, lxd.LaunchSpec{Name: name, Image: fp, Type: spec.Type, Ephemeral: true, Profiles: opts.Profiles}); err != nil {
		return "", err
	}
	var version string
	err := func() error {
		if err := waitReady(ctx, c, name, opts.ReadyTimeout); err != nil {
			return err
		}
		out, code, err := execOutput(ctx, c, name, "systemctl", "is-enabled", BootstrapUnit)
		if err != nil {
			return err
		}
		if code != 0 || out != "enabled" {
			return fmt.Errorf("systemctl is-enabled %s: %q (exit status %d), want enabled", BootstrapUnit, out, code)
		}
		version, code, err = execOutput(ctx, c, name, RunnerDir+"/bin/Runner.Listener", "--version")
		if err != nil {
			return err
		}
		if code != 0 || version == "" {
			return fmt.Errorf("%s/bin/Runner.Listener --version: exit status %d: %q", RunnerDir, code, version)
		}
		return nil
	}()
	return version, errors.Join(err, deleteInstance(ctx, c, name))
}

// execOutput runs argv and returns its trimmed output. LXD 5.0 sometimes
// loses the output of a short command, so an empty output is retried.
func execOutput(ctx context.Context, c *lxd.Client, name string, argv ...string) (string, int, error) {
	for attempt := 1; ; attempt++ {
		var out bytes.Buffer
		w := &lockedWriter{w: &out}
		code, err := c.Exec(ctx, name, lxd.ExecSpec{Command: argv, Env: stepEnv, Stdout: w, Stderr: w})
		s := strings.TrimSpace(out.String())
		if err != nil || s != "" || attempt == 5 {
			return s, code, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// deleteInstance and deleteImage run on a fresh context, since ctx may be
// why the build failed, and retry for a while: LXD may be restarting.
func deleteInstance(ctx context.Context, c *lxd.Client, name string) error {
	return retry(ctx, func(cctx context.Context) error { return c.Delete(cctx, name) })
}

func deleteImage(ctx context.Context, c *lxd.Client, fp string) error {
	return retry(ctx, func(cctx context.Context) error { return c.DeleteImage(cctx, fp) })
}

func retry(ctx context.Context, f func(context.Context) error) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	for {
		err := f(cctx)
		if err == nil {
			return nil
		}
		select {
		case <-cctx.Done():
			return fmt.Errorf("clean up: %w", err)
		case <-time.After(2 * time.Second):
		}
	}
}

func suffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func short(fp string) string {
	if len(fp) > 12 {
		return fp[:12]
	}
	return fp
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.buf) }
