package image

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path"
)

// install puts the runner, its user, the bootstrap, the files and the
// operator's steps into a running instance.
func install(ctx context.Context, c Guest, name string, spec Spec, tarball string, logf func(string, ...any), log io.Writer) error {
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

func cleanImage(ctx context.Context, c Guest, name string) error {
	return run(ctx, c, name, "clean up", cleanScript, io.Discard)
}
