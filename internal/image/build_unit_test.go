package image

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
)

// The tests here run Build against fakeLXD: no daemon, milliseconds each.

var fakeNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func fakeOpts(t *testing.T) Options {
	return Options{Log: testLog{t}, Clock: fleettest.NewClock(fakeNow)}
}

// TestBuildFake builds into the fake and checks what it was asked: the
// runner and the bootstrap pushed, the image published stopped with its
// properties, smoke-tested, aliased, and no instance left.
func TestBuildFake(t *testing.T) {
	f := newFakeLXD()
	spec := fakeSpec(t, f)
	var builder *fakeInstance
	f.exec = func(ctx context.Context, inst *fakeInstance, argv []string) (string, int, error) {
		if strings.Contains(inst.Name, "-build-") {
			builder = inst
		}
		return healthyExec(ctx, inst, argv)
	}
	res, err := Build(context.Background(), f, spec, fakeOpts(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.alias(spec.Name); got != res.Fingerprint || got == "" {
		t.Errorf("alias %s -> %q, want %s", spec.Name, got, res.Fingerprint)
	}
	if res.VersionedAlias != "linux-20260304050607" || f.alias(res.VersionedAlias) != res.Fingerprint {
		t.Errorf("versioned alias %s -> %q", res.VersionedAlias, f.alias(res.VersionedAlias))
	}
	if res.RunnerVersion != fakeRunnerVersion {
		t.Errorf("runner version %q", res.RunnerVersion)
	}
	img, _ := f.Image(context.Background(), res.Fingerprint)
	src, _ := f.Image(context.Background(), "debian")
	for k, want := range map[string]string{
		PropName: "linux", PropRunnerVersion: fakeRunnerVersion, PropSourceFingerprint: src.Fingerprint,
		PropBuildTime: "2026-03-04T05:06:07Z", PropConfigDigest: spec.Digest(), "os": "debian", "release": "bookworm",
	} {
		if img.Properties[k] != want {
			t.Errorf("property %s = %q, want %q", k, img.Properties[k], want)
		}
	}
	if builder == nil {
		t.Fatal("nothing ran in a builder")
	}
	if got := builder.Files["/tmp/actions-runner.tar.gz"]; string(got.Data) != "a runner tarball" || got.Mode != 0o600 {
		t.Errorf("runner tarball pushed as %q, mode %o", got.Data, got.Mode)
	}
	if got := builder.Files[BootstrapPath]; !bytes.Equal(got.Data, Bootstrap) || got.Mode != 0o755 {
		t.Errorf("bootstrap pushed with mode %o", got.Mode)
	}
	if n := len(builder.Scripts); n == 0 || builder.Scripts[n-1] != cleanScript {
		t.Errorf("the builder was not cleaned last: %d scripts", n)
	}
	if left := f.instanceNames(); len(left) != 0 {
		t.Errorf("instances left: %v", left)
	}
	if launches := f.called("launch "); len(launches) != 2 || !strings.Contains(launches[1], "-smoke-") {
		t.Errorf("launches %v, want a builder and a smoke test", launches)
	}
}

// TestBuildFakeFailures: whatever fails, the old alias and image stay, no
// new image is left and no instance either.
func TestBuildFakeFailures(t *testing.T) {
	for _, tt := range []struct {
		name string
		// exec, when set, replaces healthyExec; cancel ends the build's
		// context.
		exec     func(ctx context.Context, cancel context.CancelFunc, inst *fakeInstance, argv []string) (string, int, error)
		sha256   string
		wantErr  []string
		wantIs   error
		launches int  // instances launched
		publish  bool // whether an image was published (and so deleted again)
	}{
		{
			name:     "a runner tarball with another sha256 fails before any instance is launched",
			sha256:   strings.Repeat("0", 64),
			wantErr:  []string{"sha256 mismatch", "nothing was built"},
			launches: 0,
		},
		{
			name: "a failing step",
			exec: func(ctx context.Context, _ context.CancelFunc, inst *fakeInstance, argv []string) (string, int, error) {
				if strings.Contains(strings.Join(argv, " "), "gha-image-step-1.sh") {
					return "about to fail", 7, nil
				}
				return healthyExec(ctx, inst, argv)
			},
			wantErr:  []string{"step 1", "exit status 7", "about to fail"},
			launches: 1,
		},
		{
			name: "a smoke test that finds the bootstrap disabled",
			exec: func(ctx context.Context, _ context.CancelFunc, inst *fakeInstance, argv []string) (string, int, error) {
				if slices.Contains(argv, "is-enabled") {
					return "disabled", 1, nil
				}
				return healthyExec(ctx, inst, argv)
			},
			wantErr:  []string{"smoke test", "not moved", "want enabled"},
			launches: 2,
			publish:  true,
		},
		{
			name: "a smoke test whose runner does not answer",
			exec: func(ctx context.Context, _ context.CancelFunc, inst *fakeInstance, argv []string) (string, int, error) {
				if strings.HasSuffix(argv[0], "Runner.Listener") {
					return "cannot execute binary file", 126, nil
				}
				return healthyExec(ctx, inst, argv)
			},
			wantErr:  []string{"smoke test", "Runner.Listener --version: exit status 126"},
			launches: 2,
			publish:  true,
		},
		{
			name: "a build cancelled during a step cleans up on a fresh context",
			exec: func(ctx context.Context, cancel context.CancelFunc, inst *fakeInstance, argv []string) (string, int, error) {
				if strings.Contains(strings.Join(argv, " "), "gha-image-step-1.sh") {
					cancel()
					return "", -1, ctx.Err()
				}
				return healthyExec(ctx, inst, argv)
			},
			wantIs:   context.Canceled,
			launches: 1,
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
			if tt.sha256 != "" {
				spec.Runner.SHA256 = tt.sha256
			}
			old := f.addImage(map[string]string{PropName: spec.Name}, fakeNow.Add(-time.Hour), spec.Name)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.exec != nil {
				f.exec = func(ctx context.Context, inst *fakeInstance, argv []string) (string, int, error) {
					return tt.exec(ctx, cancel, inst, argv)
				}
			}

			_, err := Build(ctx, f, spec, fakeOpts(t))
			if err == nil {
				t.Fatal("build succeeded")
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q: %v", want, err)
				}
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error is not %v: %v", tt.wantIs, err)
			}
			if got := f.alias(spec.Name); got != old {
				t.Errorf("alias %s moved to %s", spec.Name, got)
			}
			if got := f.imagesNamed(spec.Name); !slices.Equal(got, []string{old}) {
				t.Errorf("images %v, want only the old %s", got, old)
			}
			if launches := f.called("launch "); len(launches) != tt.launches {
				t.Errorf("launches %v, want %d", launches, tt.launches)
			}
			published := len(f.called("publish ")) > 0
			if published != tt.publish {
				t.Errorf("published: %v, want %v", published, tt.publish)
			}
			if published && len(f.called("delete-image ")) != 1 {
				t.Errorf("the new image was not deleted: %v", f.calls)
			}
			if left := f.instanceNames(); len(left) != 0 {
				t.Errorf("instances left: %v", left)
			}
		})
	}
}
