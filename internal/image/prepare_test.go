package image

import (
	"context"
	"os"
	"path/filepath"
	"strings"
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

// TestPrepareFake: a stopped template is started, prepared, cleaned and
// stopped again, and stopped again even when preparing fails; a running
// one is prepared and left running, not cleaned.
func TestPrepareFake(t *testing.T) {
	for _, tt := range []struct {
		name    string
		status  string
		exec    func(ctx context.Context, inst *fakeInstance, argv []string) (string, int, error)
		wantErr string
		cleaned bool
	}{
		{name: "stopped", status: "Stopped", cleaned: true},
		{name: "running", status: "Running"},
		{
			name: "stopped, with a failing step", status: "Stopped", wantErr: "step 1",
			exec: func(ctx context.Context, inst *fakeInstance, argv []string) (string, int, error) {
				if strings.Contains(strings.Join(argv, " "), "gha-image-step-1.sh") {
					return "no", 1, nil
				}
				return healthyExec(ctx, inst, argv)
			},
		},
		{
			name: "stopped, on an architecture with no runner", status: "Stopped", wantErr: `architecture "riscv64"`,
			exec: func(ctx context.Context, inst *fakeInstance, argv []string) (string, int, error) {
				if argv[0] == "uname" {
					return "riscv64", 0, nil
				}
				return healthyExec(ctx, inst, argv)
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeLXD()
			spec := fakeSpec(t, f)
			step := filepath.Join(t.TempDir(), "step.sh")
			if err := os.WriteFile(step, []byte("true\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			spec.Steps = []string{step}
			inst := f.addInstance("template", tt.status)
			f.exec = tt.exec

			err := Prepare(context.Background(), f, "template", spec, fakeOpts(t))
			if tt.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error %v, want one with %q", err, tt.wantErr)
			}
			if st, _ := f.Status(context.Background(), "template"); st != tt.status {
				t.Errorf("left %s, want %s", st, tt.status)
			}
			if tt.wantErr == "" {
				if got := inst.Files[BootstrapPath]; got.Mode != 0o755 {
					t.Errorf("no bootstrap pushed: %+v", inst.Files)
				}
				if got := inst.Files["/tmp/actions-runner.tar.gz"]; string(got.Data) != "a runner tarball" {
					t.Errorf("runner pushed as %q", got.Data)
				}
			}
			n := len(inst.Scripts)
			if cleaned := n > 0 && inst.Scripts[n-1] == cleanScript; cleaned != tt.cleaned {
				t.Errorf("cleaned: %v, want %v", cleaned, tt.cleaned)
			}
			if tt.status == "Running" && len(f.called("start "))+len(f.called("stop ")) != 0 {
				t.Errorf("a running instance was started or stopped: %v", f.calls)
			}
			if got := f.called("publish "); len(got) != 0 {
				t.Errorf("prepare published: %v", got)
			}
		})
	}
}
