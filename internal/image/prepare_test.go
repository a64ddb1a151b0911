package image

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/image/imagetest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
)

// TestPrepareStoppedInstance installs into a stopped template instance,
// which ends stopped again and cleaned, with nothing published.
func TestPrepareStoppedInstance(t *testing.T) {
	t.Parallel()
	c := imagetest.Connect(t)
	spec := testSpec(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	step := filepath.Join(t.TempDir(), "step.sh")
	os.WriteFile(step, []byte("echo prepared > /etc/prepared\n"), 0o644)
	spec.Steps = []string{step}

	name := lxdtest.Name(t)
	lxdtest.Cleanup(t, c, name)
	if err := c.Launch(ctx, lxd.LaunchSpec{Name: name, Image: spec.Source}); err != nil {
		t.Fatal(err)
	}
	if err := waitReady(ctx, c, name, time.Minute); err != nil { // systemd ignores SIGPWR while booting
		t.Fatal(err)
	}
	if err := c.Stop(ctx, name, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := Prepare(ctx, c, name, spec, testOpts(t)); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Status(ctx, name); err != nil || st != "Stopped" {
		t.Fatalf("status %q, %v; want Stopped", st, err)
	}
	if imgs := imagesNamed(t, c, spec.Name); len(imgs) != 0 {
		t.Errorf("prepare published %d images", len(imgs))
	}
	if err := c.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := waitReady(ctx, c, name, time.Minute); err != nil {
		t.Fatal(err)
	}
	for argv, want := range map[string][]string{
		"enabled":                   {"systemctl", "is-enabled", BootstrapUnit},
		"prepared":                  {"cat", "/etc/prepared"},
		"runner":                    {"stat", "-c", "%U", RunnerDir + "/run.sh"},
		imagetest.FakeRunnerVersion: {RunnerDir + "/bin/Runner.Listener", "--version"},
	} {
		out, code, err := execOutput(ctx, c, name, want...)
		if err != nil || code != 0 || out != argv {
			t.Errorf("%v: %q (exit %d, %v), want %q", want, out, code, err, argv)
		}
	}
	// The template is not a managed instance: the bootstrap leaves it alone.
	out, _, _ := execOutput(ctx, c, name, "sh", "-c", "sleep 1; journalctl -b -u "+BootstrapUnit+" --no-pager -o cat")
	t.Logf("bootstrap in the template:\n%s", out)
	if st, _ := c.Status(ctx, name); st != "Running" {
		t.Errorf("template status %s, want Running", st)
	}
}
