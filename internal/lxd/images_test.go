package lxd_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/devimage"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/image"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
)

// Client is what image builds take. The check is here because lxd itself
// imports nothing of ours but fleet.
var _ image.LXD = (*lxd.Client)(nil)

// TestImageOps covers the calls image builds use, on a busybox instance:
// launch (not ephemeral), exec, push, stop, publish and alias moves.
func TestImageOps(t *testing.T) {
	c := lxdtest.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	alias, fp := lxdtest.Image(t, c, devimage.Options{})

	src, err := c.Image(ctx, alias)
	if err != nil {
		t.Fatal(err)
	}
	if src.Fingerprint != fp || src.Architecture == "" {
		t.Errorf("image %+v", src)
	}
	if _, err := c.Image(ctx, "no-such-image-"+alias); !errors.Is(err, fleet.ErrNotFound) {
		t.Errorf("missing image: %v", err)
	}

	name := lxdtest.Name(t)
	lxdtest.Cleanup(t, c, name)
	if err := c.Launch(ctx, lxd.LaunchSpec{Name: name, Image: alias, Config: map[string]string{"user.x": "y"}}); err != nil {
		t.Fatal(err)
	}
	if st, _ := c.Status(ctx, name); st != "Running" {
		t.Fatalf("status %s", st)
	}

	if err := c.PushFile(ctx, name, "/tmp/hello", bytes.NewReader([]byte("hello\n")), 0, 0, 0o640); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code, err := c.Exec(ctx, name, lxd.ExecSpec{
		Command: []string{"sh", "-c", `cat /tmp/hello; ls -l /tmp/hello | cut -c1-10; echo "$FOO" >&2; read line; echo "in:$line"; exit 3`},
		Env:     map[string]string{"FOO": "bar"}, Stdin: strings.NewReader("typed\n"), Stdout: &out, Stderr: &errOut,
	})
	if err != nil {
		t.Fatal(err)
	}
	if code != 3 || out.String() != "hello\n-rw-r-----\nin:typed\n" || errOut.String() != "bar\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}

	if err := c.Stop(ctx, name, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(ctx, name, 5*time.Second); err != nil {
		t.Errorf("stopping a stopped instance: %v", err)
	}
	versioned := lxdtest.Name(t)
	pub, err := c.Publish(ctx, name, map[string]string{"runner.version": "1.2.3"}, []string{versioned}, "none")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.DeleteImage(context.Background(), pub) })
	info, err := c.Image(ctx, versioned)
	if err != nil || info.Fingerprint != pub || info.Properties["runner.version"] != "1.2.3" {
		t.Errorf("published image %+v, %v", info, err)
	}

	main := lxdtest.Name(t)
	if got, err := c.AliasTarget(ctx, main); err != nil || got != "" {
		t.Errorf("missing alias: %q, %v", got, err)
	}
	for _, target := range []string{fp, pub} { // create, then move
		if err := c.SetAlias(ctx, main, target); err != nil {
			t.Fatal(err)
		}
		if got, _ := c.AliasTarget(ctx, main); got != target {
			t.Errorf("alias -> %s, want %s", got, target)
		}
	}
	imgs, err := c.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, img := range imgs {
		if img.Fingerprint == pub {
			found = true
			if strings.Join(img.Aliases, ",") != strings.Join(sortedPair(main, versioned), ",") {
				t.Errorf("aliases %v", img.Aliases)
			}
		}
	}
	if !found {
		t.Error("published image not listed")
	}
}

func sortedPair(a, b string) []string {
	if a > b {
		a, b = b, a
	}
	return []string{a, b}
}
