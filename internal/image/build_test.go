package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/image/imagetest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
)

func TestValidate(t *testing.T) {
	good := Spec{Name: "linux", Source: "debian", Runner: RunnerSpec{Version: "2.321.0", SHA256: strings.Repeat("a", 64)}}
	if err := good.Validate(); err != nil {
		t.Fatalf("good spec: %v", err)
	}
	bad := Spec{
		Name:   "9bad_name",
		Type:   "vm",
		Runner: RunnerSpec{Version: "latest", SHA256: "xyz", Arch: "386", URL: "ftp://x/y"},
		Steps:  []string{""},
		Files:  []FileSpec{{Dst: "rel/path", Mode: 0o4755 | os.ModeDir}},
		Keep:   -1,
	}
	err := bad.Validate()
	if err == nil {
		t.Fatal("bad spec passed")
	}
	for _, want := range []string{"name", "source", "type", "runner.version", "runner.sha256", "runner.arch",
		"runner.url", "steps[0]", "files[0].src", "files[0].dst", "files[0].mode", "keep"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
	if err := (Spec{Name: "x", Source: "s", Runner: RunnerSpec{Version: "1.0"}}).Validate(); err == nil ||
		!strings.Contains(err.Error(), "runner.sha256: required") {
		t.Errorf("missing sha256: %v", err)
	}
	d := good.withDefaults()
	if d.Keep != 3 || d.Type != "container" || d.Runner.URL != DefaultRunnerURL {
		t.Errorf("defaults: %+v", d)
	}
	d.Runner.Arch = "arm64"
	if got := d.Runner.runnerURL(); got != "https://github.com/actions/runner/releases/download/v2.321.0/actions-runner-linux-arm64-2.321.0.tar.gz" {
		t.Errorf("url %s", got)
	}
	if good.Digest() == bad.Digest() || good.Digest() != good.Digest() {
		t.Error("digest")
	}
}

func TestBootstrapEmbedded(t *testing.T) {
	s := string(Bootstrap)
	for _, want := range []string{"#!/bin/sh", "/dev/lxd/sock", "user.runner.jitconfig", "export ACTIONS_RUNNER_INPUT_JITCONFIG",
		"runuser -u", "poweroff"} {
		if !strings.Contains(s, want) {
			t.Errorf("bootstrap lacks %q", want)
		}
	}
	u := string(BootstrapService)
	for _, want := range []string{"After=network-online.target", "ExecStart=" + BootstrapPath, "WantedBy=multi-user.target"} {
		if !strings.Contains(u, want) {
			t.Errorf("unit lacks %q", want)
		}
	}
}

func TestFetchRunnerHTTP(t *testing.T) {
	body := []byte("tarball")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1.2.3/runner-arm64-1.2.3.tgz" {
			http.NotFound(w, r)
			return
		}
		w.Write(body)
	}))
	defer srv.Close()
	r := RunnerSpec{Version: "1.2.3", Arch: "arm64", URL: srv.URL + "/v{version}/runner-{arch}-{version}.tgz",
		SHA256: "b8a1b4f1c2c1e4b2fd3ae5e0a8e1c1f1f0f4a7b87d5ab7dbf1ef7a9d1f1f1f1f"}
	logf := func(string, ...any) {}
	if _, err := fetchRunner(context.Background(), http.DefaultClient, r, logf); err == nil || !strings.Contains(err.Error(), "sha256 mismatch") {
		t.Fatalf("want mismatch, got %v", err)
	}
	r.SHA256 = sha(body)
	p, err := fetchRunner(context.Background(), http.DefaultClient, r, logf)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(p)
	if b, _ := os.ReadFile(p); !bytes.Equal(b, body) {
		t.Errorf("got %q", b)
	}
	r.URL = srv.URL + "/missing"
	if _, err := fetchRunner(context.Background(), http.DefaultClient, r, logf); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("want 404, got %v", err)
	}
}

func sha(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

// imagesNamed lists the images built for name.
func imagesNamed(t *testing.T, c *lxd.Client, name string) []lxd.ImageInfo {
	t.Helper()
	all, err := c.Images(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []lxd.ImageInfo
	for _, img := range all {
		if img.Properties[PropName] == name {
			out = append(out, img)
		}
	}
	return out
}

// noInstancesNamed fails when an instance whose name starts with prefix
// is left.
func noInstancesNamed(t *testing.T, prefix string) {
	t.Helper()
	names, err := lxdtest.Raw(t).GetInstanceNames("container")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			t.Errorf("instance %s left behind", n)
		}
	}
}

// cleanupImages deletes every image of name when the test ends.
func cleanupImages(t *testing.T, c *lxd.Client, name string) {
	t.Cleanup(func() {
		for _, img := range imagesNamed(t, c, name) {
			if err := c.DeleteImage(context.Background(), img.Fingerprint); err != nil {
				t.Errorf("clean up image %s: %v", img.Fingerprint, err)
			}
		}
	})
}

func testSpec(t *testing.T, c *lxd.Client) Spec {
	src := imagetest.SourceImage(t, c)
	tarball, sum := imagetest.FakeRunner(t)
	return Spec{
		Name:   lxdtest.Name(t),
		Source: src,
		Runner: RunnerSpec{Version: "2.999.0", URL: tarball, SHA256: sum},
		Keep:   2,
	}
}

func testOpts(t *testing.T) Options {
	return Options{Log: testLog{t}, Compression: "none"}
}

type testLog struct{ t *testing.T }

// cancelOn calls cancel once a log line contains s.
type cancelOn struct {
	w      io.Writer
	s      string
	cancel context.CancelFunc
}

func (c cancelOn) Write(p []byte) (int, error) {
	if strings.Contains(string(p), c.s) {
		go func() { time.Sleep(time.Second); c.cancel() }()
	}
	return c.w.Write(p)
}

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestBuildChecksumMismatch(t *testing.T) {
	t.Parallel()
	c := imagetest.Connect(t)
	spec := testSpec(t, c)
	cleanupImages(t, c, spec.Name)
	spec.Runner.SHA256 = strings.Repeat("0", 64)
	_, err := Build(context.Background(), c, spec, testOpts(t))
	if err == nil || !strings.Contains(err.Error(), "sha256 mismatch") {
		t.Fatalf("want a sha256 mismatch, got %v", err)
	}
	if imgs := imagesNamed(t, c, spec.Name); len(imgs) != 0 {
		t.Errorf("published %d images", len(imgs))
	}
	if fp, _ := c.AliasTarget(context.Background(), spec.Name); fp != "" {
		t.Errorf("alias %s set", spec.Name)
	}
	noInstancesNamed(t, spec.Name)
}

// TestBuildLifecycle builds, runs the image as the service would, fails a
// build, and prunes, on one name (each build costs a boot and a publish).
func TestBuildLifecycle(t *testing.T) {
	t.Parallel()
	c := imagetest.Connect(t)
	spec := testSpec(t, c)
	cleanupImages(t, c, spec.Name)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	dir := t.TempDir()
	step1 := filepath.Join(dir, "step1.sh")
	os.WriteFile(step1, []byte("echo step one ran > /etc/step-one\n"), 0o644)
	extra := filepath.Join(dir, "extra.conf")
	os.WriteFile(extra, []byte("hello\n"), 0o600)
	spec.Steps = []string{step1}
	spec.Files = []FileSpec{{Src: extra, Dst: "/etc/gha/extra.conf", Mode: 0o640}}

	start := time.Now()
	r1, err := Build(ctx, c, spec, testOpts(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("build 1 took %s", time.Since(start).Round(time.Second))
	noInstancesNamed(t, spec.Name)
	if r1.RunnerVersion != "2.999.0" {
		t.Errorf("smoke test version %q", r1.RunnerVersion)
	}
	img, err := c.Image(ctx, spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	if img.Fingerprint != r1.Fingerprint {
		t.Errorf("alias %s -> %s, want %s", spec.Name, img.Fingerprint, r1.Fingerprint)
	}
	src, _ := c.Image(ctx, spec.Source)
	for k, want := range map[string]string{
		PropRunnerVersion: "2.999.0", PropSourceFingerprint: src.Fingerprint, PropConfigDigest: spec.Digest(), PropName: spec.Name,
	} {
		if img.Properties[k] != want {
			t.Errorf("property %s = %q, want %q", k, img.Properties[k], want)
		}
	}
	if _, err := time.Parse(time.RFC3339, img.Properties[PropBuildTime]); err != nil {
		t.Errorf("property %s: %v", PropBuildTime, err)
	}
	if fp, _ := c.AliasTarget(ctx, r1.VersionedAlias); fp != r1.Fingerprint || !strings.HasPrefix(r1.VersionedAlias, spec.Name+"-") ||
		len(r1.VersionedAlias) != len(spec.Name)+15 {
		t.Errorf("versioned alias %s -> %s", r1.VersionedAlias, fp)
	}

	t.Run("bootstrap runs the runner with the JIT config and powers off", func(t *testing.T) {
		rec := runManaged(t, c, spec.Name, map[string]string{fleet.KeyJITConfig: "SECRET123"})
		t.Logf("record:\n%s", rec)
		lines := strings.Split(rec, "\n")
		has := func(l string) bool {
			for _, x := range lines {
				if x == l {
					return true
				}
			}
			return false
		}
		for _, want := range []string{"jit_set=yes", "jit=SECRET123", "user=runner", "argc=0", "pwd=" + RunnerDir} {
			if !has(want) {
				t.Errorf("record lacks %q", want)
			}
		}
		before, ps, ok := strings.Cut(rec, "--- ps\n")
		if !ok {
			t.Fatal("no ps section")
		}
		if !strings.Contains(ps, "run.sh") || !strings.Contains(ps, "gha-runner-bootstrap") {
			t.Errorf("ps output does not show run.sh and the bootstrap: %s", ps)
		}
		if strings.Contains(ps, "SECRET123") {
			t.Errorf("the JIT config is on a command line:\n%s", ps)
		}
		for _, l := range strings.Split(before, "\n") {
			if strings.HasPrefix(l, "arg") && strings.Contains(l, "SECRET123") {
				t.Errorf("run.sh argv holds the secret: %s", l)
			}
		}
	})

	t.Run("without a JIT config a managed instance powers off", func(t *testing.T) {
		name := lxdtest.Name(t)
		lxdtest.Cleanup(t, c, name)
		err := c.Launch(ctx, lxd.LaunchSpec{Name: name, Image: spec.Name, Ephemeral: true,
			Config: map[string]string{fleet.KeyManaged: "true", "user.runner.jitconfig-wait": "1"}})
		if err != nil {
			t.Fatal(err)
		}
		lxdtest.WaitGone(t, c, name, 90*time.Second)
	})

	t.Run("a failing step keeps the old alias and image", func(t *testing.T) {
		bad := spec
		failing := filepath.Join(dir, "fail.sh")
		os.WriteFile(failing, []byte("echo about to fail\necho on stderr >&2\nexit 7\n"), 0o644)
		bad.Steps = []string{step1, failing}
		_, err := Build(ctx, c, bad, testOpts(t))
		if err == nil {
			t.Fatal("build with a failing step succeeded")
		}
		for _, want := range []string{"step 2", "fail.sh", "exit status 7", "about to fail", "on stderr"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q: %v", want, err)
			}
		}
		if fp, _ := c.AliasTarget(ctx, spec.Name); fp != r1.Fingerprint {
			t.Errorf("alias moved to %s", fp)
		}
		if imgs := imagesNamed(t, c, spec.Name); len(imgs) != 1 {
			t.Errorf("%d images, want 1", len(imgs))
		}
		noInstancesNamed(t, spec.Name)
	})

	t.Run("a failing smoke test keeps the old alias and deletes the new image", func(t *testing.T) {
		bad := spec
		disable := filepath.Join(dir, "disable.sh")
		os.WriteFile(disable, []byte("systemctl disable "+BootstrapUnit+"\n"), 0o644)
		bad.Steps = []string{disable}
		_, err := Build(ctx, c, bad, testOpts(t))
		if err == nil || !strings.Contains(err.Error(), "smoke test") || !strings.Contains(err.Error(), "want enabled") {
			t.Fatalf("want a smoke test failure, got %v", err)
		}
		if fp, _ := c.AliasTarget(ctx, spec.Name); fp != r1.Fingerprint {
			t.Errorf("alias moved to %s", fp)
		}
		if imgs := imagesNamed(t, c, spec.Name); len(imgs) != 1 {
			t.Errorf("%d images, want 1", len(imgs))
		}
		noInstancesNamed(t, spec.Name)
	})

	t.Run("a cancelled build leaves no instance", func(t *testing.T) {
		cctx, ccancel := context.WithCancel(ctx)
		defer ccancel()
		slow := filepath.Join(dir, "slow.sh")
		os.WriteFile(slow, []byte("sleep 60\n"), 0o644)
		bad := spec
		bad.Steps = []string{slow}
		opts := testOpts(t)
		opts.Log = cancelOn{testLog{t}, "step 1:", ccancel}
		start := time.Now()
		_, err := Build(cctx, c, bad, opts)
		if err == nil || !errors.Is(err, context.Canceled) {
			t.Errorf("want context.Canceled, got %v", err)
		}
		if d := time.Since(start); d > 40*time.Second {
			t.Errorf("cancelled build took %s", d)
		}
		if fp, _ := c.AliasTarget(ctx, spec.Name); fp != r1.Fingerprint {
			t.Errorf("alias moved to %s", fp)
		}
		noInstancesNamed(t, spec.Name)
	})

	t.Run("keep prunes the oldest", func(t *testing.T) {
		var last Result
		for i := 2; i <= 3; i++ {
			time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second))) // distinct versioned aliases
			r, err := Build(ctx, c, spec, testOpts(t))
			if err != nil {
				t.Fatal(err)
			}
			last = r
		}
		if len(last.Pruned) != 1 || last.Pruned[0] != r1.Fingerprint {
			t.Errorf("pruned %v, want [%s]", last.Pruned, r1.Fingerprint)
		}
		imgs := imagesNamed(t, c, spec.Name)
		if len(imgs) != 2 {
			t.Errorf("%d images left, want 2", len(imgs))
		}
		if fp, _ := c.AliasTarget(ctx, spec.Name); fp != last.Fingerprint {
			t.Errorf("alias -> %s, want %s", fp, last.Fingerprint)
		}
		if _, err := c.Image(ctx, r1.Fingerprint); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("oldest image still there: %v", err)
		}
		noInstancesNamed(t, spec.Name)
	})
}

// runManaged launches an instance from image the way the service does
// (managed, ephemeral, with config), with a proxy device that leads the
// fake run.sh's POST to a server here, waits for the record and for the
// instance to delete itself, and returns the record.
func runManaged(t *testing.T, c *lxd.Client, image string, config map[string]string) string {
	t.Helper()
	got := make(chan string, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		select {
		case got <- string(b):
		default:
		}
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	port := ln.Addr().(*net.TCPAddr).Port

	name := lxdtest.Name(t)
	lxdtest.Cleanup(t, c, name)
	cfg := map[string]string{fleet.KeyManaged: "true"}
	for k, v := range config {
		cfg[k] = v
	}
	listen := fmt.Sprintf("tcp:127.0.0.1:%d", imagetest.RecordPort)
	connect := fmt.Sprintf("tcp:127.0.0.1:%d", port)
	err = c.Launch(context.Background(), lxd.LaunchSpec{Name: name, Image: image, Ephemeral: true, Config: cfg,
		Devices: map[string]map[string]string{"record": {"type": "proxy", "bind": "instance", "listen": listen, "connect": connect}}})
	if err != nil {
		t.Fatal(err)
	}
	var rec string
	select {
	case rec = <-got:
	case <-time.After(90 * time.Second):
		t.Fatal("no record from run.sh within 90s")
	}
	lxdtest.WaitGone(t, c, name, 60*time.Second)
	return rec
}
