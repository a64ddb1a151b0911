package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/image"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/image/imagetest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
)

func writeImageConfig(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const imageConfigYAML = `
github:
  app_id: 1
lxd:
  socket: /nonexistent/unix.socket
pools:
  - name: linux
    labels: [linux]
    image: ubuntu-runner
images:
  - name: ubuntu-runner
    source: debian12
    runner:
      version: 2.321.0
      sha256: %s
    steps: [steps/base.sh, /abs/extra.sh]
    files:
      - {src: files/ca.pem, dst: /usr/local/share/ca-certificates/ca.crt, mode: "0644"}
    keep: 5
    rebuild_every: 168h
  - name: arm
    source: debian12-arm
    type: virtual-machine
    runner: {version: 2.321.0, sha256: %s, arch: arm64, url: runner.tgz}
`

func TestImageConfigSpecs(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	p := writeImageConfig(t, fmt.Sprintf(imageConfigYAML, sum, sum))
	_, specs, err := loadImageConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(p)
	if len(specs) != 2 {
		t.Fatalf("%d specs", len(specs))
	}
	s := specs[0]
	if s.Name != "ubuntu-runner" || s.Source != "debian12" || s.Keep != 5 || s.Runner.Version != "2.321.0" || s.Runner.SHA256 != sum {
		t.Errorf("spec %+v", s)
	}
	if s.Steps[0] != filepath.Join(dir, "steps/base.sh") || s.Steps[1] != "/abs/extra.sh" {
		t.Errorf("steps %v", s.Steps)
	}
	if f := s.Files[0]; f.Src != filepath.Join(dir, "files/ca.pem") || f.Mode != 0o644 || f.Dst != "/usr/local/share/ca-certificates/ca.crt" {
		t.Errorf("file %+v", f)
	}
	a := specs[1]
	if a.Type != "virtual-machine" || a.Runner.Arch != "arm64" || a.Runner.URL != filepath.Join(dir, "runner.tgz") {
		t.Errorf("arm spec %+v", a)
	}
}

func TestImageConfigInvalid(t *testing.T) {
	p := writeImageConfig(t, `
images:
  - name: a
    source: s
    runner: {version: "1.0"}
    files: [{src: x, dst: /y, mode: "rw"}]
    rebuild_every: -1h
  - name: a
    runner: {version: "1.0", sha256: "`+strings.Repeat("0", 64)+`"}
`)
	_, _, err := loadImageConfig(p)
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{
		"images[0] (a): runner.sha256: required",
		`images[0] (a): files[0].mode "rw"`,
		"images[0] (a): rebuild_every -1h0m0s",
		"images[1] (a): source: required",
		`images[1]: name "a" used twice`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestImageConfigMisspeltKey(t *testing.T) {
	p := writeImageConfig(t, `
github: {app_id: 1}
images:
  - name: a
    source: s
    stpes: [x.sh]
`)
	if _, _, err := loadImageConfig(p); err == nil || !strings.Contains(err.Error(), "stpes") {
		t.Errorf("misspelt key: %v", err)
	}
}

func TestImageCommandArgs(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	cfg := writeImageConfig(t, fmt.Sprintf(imageConfigYAML, sum, sum))
	for _, tc := range []struct {
		args  []string
		usage bool
		want  string
	}{
		{nil, true, "want build or prepare"},
		{[]string{"frob"}, true, "unknown subcommand"},
		{[]string{"build"}, true, "missing NAME"},
		{[]string{"build", "x", "y", "--config", cfg}, true, "unexpected argument"},
		{[]string{"build", "ubuntu-runner"}, false, "--config FILE is required"},
		{[]string{"prepare", "inst", "--config", cfg}, false, "--image NAME is required"},
		{[]string{"build", "nope", "--config", cfg}, false, `no image "nope"`},
		{[]string{"build", "--config", cfg, "nope"}, false, `no image "nope"`},
		// Reaches LXD, at a socket that does not exist.
		{[]string{"build", "ubuntu-runner", "--config", cfg}, false, "/nonexistent/unix.socket"},
	} {
		var out, errOut bytes.Buffer
		err := imageCommand(context.Background(), tc.args, &out, &errOut)
		var u usageError
		if err == nil || errors.As(err, &u) != tc.usage || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v (usage error: %v), want %q (usage error: %v)", tc.args, err, errors.As(err, &u), tc.want, tc.usage)
		}
	}
}

// TestImageBuildCommand builds an image through the CLI on the real LXD.
func TestImageBuildCommand(t *testing.T) {
	c := imagetest.Connect(t)
	src := imagetest.SourceImage(t, c)
	tarball, sum := imagetest.FakeRunner(t)
	name := lxdtest.Name(t)
	t.Cleanup(func() {
		imgs, _ := c.Images(context.Background())
		for _, img := range imgs {
			if img.Properties[image.PropName] == name {
				if err := c.DeleteImage(context.Background(), img.Fingerprint); err != nil {
					t.Error(err)
				}
			}
		}
	})
	cfg := writeImageConfig(t, fmt.Sprintf(`
lxd:
  socket: %s
images:
  - name: %s
    source: %s
    runner: {version: %s, url: %s, sha256: %s}
`, lxdtest.SocketPath(), name, src, imagetest.FakeRunnerVersion, tarball, sum))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	if err := imageCommand(ctx, []string{"build", name, "--config", cfg, "--compression", "none"}, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	t.Logf("stdout: %s", out.String())
	if !strings.HasPrefix(out.String(), "built "+name+": ") {
		t.Errorf("stdout %q", out.String())
	}
	img, err := c.Image(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if img.Properties[image.PropRunnerVersion] != imagetest.FakeRunnerVersion {
		t.Errorf("properties %v", img.Properties)
	}
}

// TestImagePrepareCommand prepares a running instance through the CLI: it
// stays running, with the runner and the bootstrap installed.
func TestImagePrepareCommand(t *testing.T) {
	c := imagetest.Connect(t)
	src := imagetest.SourceImage(t, c)
	tarball, sum := imagetest.FakeRunner(t)
	inst := lxdtest.Name(t)
	lxdtest.Cleanup(t, c, inst)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := c.Launch(ctx, lxd.LaunchSpec{Name: inst, Image: src}); err != nil {
		t.Fatal(err)
	}
	cfg := writeImageConfig(t, fmt.Sprintf(`
lxd: {socket: %s}
images:
  - name: tmpl
    source: unused
    runner: {version: %s, url: %s, sha256: %s}
`, lxdtest.SocketPath(), imagetest.FakeRunnerVersion, tarball, sum))
	var out, errOut bytes.Buffer
	if err := imageCommand(ctx, []string{"prepare", inst, "--config", cfg, "--image", "tmpl"}, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	if !strings.HasPrefix(out.String(), "prepared "+inst+" ") {
		t.Errorf("stdout %q", out.String())
	}
	if st, _ := c.Status(ctx, inst); st != "Running" {
		t.Errorf("status %s, want Running", st)
	}
	var got bytes.Buffer
	code, err := c.Exec(ctx, inst, lxd.ExecSpec{Command: []string{"sh", "-c",
		"systemctl is-enabled " + image.BootstrapUnit + " && stat -c %U " + image.RunnerDir + "/run.sh"}, Stdout: &got})
	if err != nil || code != 0 || got.String() != "enabled\nrunner\n" {
		t.Errorf("exit %d, %v: %q", code, err, got.String())
	}
}
