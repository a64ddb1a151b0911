package image

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
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
	Clock        fleet.Clock   // stamps the build; nil: the wall clock
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
	if o.Clock == nil {
		o.Clock = fleet.WallClock
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
func Build(ctx context.Context, c LXD, spec Spec, opts Options) (res Result, err error) {
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

	now := opts.Clock.Now().UTC()
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

// smokeTest launches an ephemeral instance from fp without a runner config
// and checks the bootstrap is enabled and the runner answers.
func smokeTest(ctx context.Context, c Instances, spec Spec, fp string, opts Options, logf func(string, ...any)) (string, error) {
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

// deleteInstance and deleteImage run on a fresh context, since ctx may be
// why the build failed, and retry for a while: LXD may be restarting.
func deleteInstance(ctx context.Context, c Instances, name string) error {
	return retry(ctx, func(cctx context.Context) error { return c.Delete(cctx, name) })
}

func deleteImage(ctx context.Context, c ImageStore, fp string) error {
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
