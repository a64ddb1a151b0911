package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
)

// Prepare installs the runner, the bootstrap, the files and the steps into
// an existing instance (the source_instance workflow) without publishing.
// A stopped instance is started for it and stopped again, cleaned like an
// image; a running one is left running and not cleaned.
func Prepare(ctx context.Context, c Instances, instance string, spec Spec, opts Options) (err error) {
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
func instanceArch(ctx context.Context, c Guest, name string) (string, error) {
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
