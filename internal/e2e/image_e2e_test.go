package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/image"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/image/imagetest"
)

// A runner image built from the debootstrap source runs a job end to end
// through the service: the image's systemd bootstrap reads the JIT config
// through /dev/lxd/sock and hands it to run.sh in the environment; run.sh
// here starts the stand-in's runner, which takes the job; when it exits the
// bootstrap powers the instance off and LXD deletes it.
func TestJobOnBuiltImage(t *testing.T) {
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	c := imagetest.Connect(t) // skips without LXD
	src := imagetest.SourceImage(t, c)
	tarball, sum := runnerTarball(t)
	spec := image.Spec{
		Name: "e2e-runner-" + randHex(3), Source: src, Type: "container", Keep: 1,
		Runner: image.RunnerSpec{Version: "2.999.0", URL: tarball, SHA256: sum, Arch: "x64"},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := image.Build(ctx, c, spec, image.Options{Compression: "none"})
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	t.Cleanup(func() { _ = c.DeleteImage(context.Background(), res.Fingerprint) })
	t.Logf("built %s (%s), runner %s", spec.Name, res.VersionedAlias, res.RunnerVersion)

	e := newEnv(t, options{image: spec.Name, limits: "  registration_timeout: 2m"})
	var ids []int64
	for i := 0; i < 2; i++ {
		ids = append(ids, e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: time.Second}))
	}
	e.waitCompleted(ids...)
	for _, id := range ids {
		if j, _ := e.fake.Job(id); j.Conclusion != ghfake.ConclusionSuccess {
			t.Fatalf("job %d: %s", id, j.Conclusion)
		}
	}
	e.waitNoInstances()
	if n := e.jitCalls(); n != 2 {
		t.Fatalf("launches = %d, want 2", n)
	}
	e.checkNoSecrets()
}

// runnerTarball is a runner tarball with the real layout whose run.sh
// starts the dev binary as the stand-in's runner, reading the JIT
// config from ACTIONS_RUNNER_INPUT_JITCONFIG like GitHub's runner does.
func runnerTarball(t *testing.T) (path, sum string) {
	t.Helper()
	bin, err := os.ReadFile(runnerPath)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	add := func(name string, mode int64, body []byte) {
		typ := byte(tar.TypeReg)
		if body == nil {
			typ = tar.TypeDir
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(body)), Typeflag: typ, ModTime: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	add("./bin/", 0o755, nil)
	add("./run.sh", 0o755, []byte("#!/bin/sh\ncd \"$(dirname \"$0\")\"\nexec ./bin/fake-runner fake-runner --from-env\n"))
	add("./config.sh", 0o755, []byte("#!/bin/sh\nexit 0\n"))
	add("./bin/Runner.Listener", 0o755, []byte("#!/bin/sh\n[ \"$1\" = --version ] && echo "+imagetest.FakeRunnerVersion+" && exit 0\nexit 1\n"))
	add("./bin/fake-runner", 0o755, bin)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "actions-runner-linux-x64-2.999.0.tar.gz")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(buf.Bytes())
	return path, hex.EncodeToString(s[:])
}
