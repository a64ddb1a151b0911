// Package lxdtest holds helpers for tests that run against a real LXD:
// connecting (or skipping when there is none), a throwaway busybox image,
// unique names, and clean-up that runs even when the test fails.
package lxdtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	lxdclient "github.com/canonical/lxd/client"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/devimage"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
)

// DefaultSocket is used when LXD_SOCKET is unset.
const DefaultSocket = "/var/lib/lxd/unix.socket"

// ProbePackage is a command that reads a config key through /dev/lxd/sock
// and POSTs it to a URL; see BuildGo.
const ProbePackage = "github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest/lxdprobe"

// SocketPath is $LXD_SOCKET or DefaultSocket.
func SocketPath() string {
	if s := os.Getenv("LXD_SOCKET"); s != "" {
		return s
	}
	return DefaultSocket
}

// skipWithoutLXD skips t when there is no LXD socket. A socket that exists
// but does not answer is a failure, not a skip.
func skipWithoutLXD(t testing.TB) string {
	t.Helper()
	sock := SocketPath()
	if _, err := os.Stat(sock); err != nil {
		fleettest.Missing(t, "no LXD socket at %s (set LXD_SOCKET, or run .ci/setup-lxd.sh): %v", sock, err)
	}
	return sock
}

// Connect returns a client for the default project, or skips t.
func Connect(t testing.TB) *lxd.Client {
	t.Helper()
	sock := skipWithoutLXD(t)
	c, err := lxd.Connect(context.Background(), lxd.Config{Socket: sock, OpTimeout: time.Minute})
	if err != nil {
		t.Fatalf("LXD socket %s exists but: %v", sock, err)
	}
	return c
}

// Raw returns LXD's own client, for doing things by hand that lxd.Client
// does not offer (e.g. an instance without our keys), or skips t.
func Raw(t testing.TB) lxdclient.InstanceServer {
	t.Helper()
	sock := skipWithoutLXD(t)
	s, err := lxdclient.ConnectLXDUnix(sock, nil)
	if err != nil {
		t.Fatalf("LXD socket %s exists but: %v", sock, err)
	}
	return s
}

// Name returns a unique name for an instance, profile or alias: "t-" and
// random hex (valid as an LXD instance name).
func Name(t testing.TB) string {
	t.Helper()
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "t-" + hex.EncodeToString(b)
}

// Ctx returns a context that ends with the test or after a minute.
func Ctx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Image builds opts into an image, imports it under a unique alias, and
// deletes it when the test ends. Each call gets its own fingerprint (the
// alias goes into the description), so parallel tests never share, and so
// never delete, each other's image.
func Image(t testing.TB, c *lxd.Client, opts devimage.Options) (alias, fingerprint string) {
	t.Helper()
	alias = Name(t)
	opts.Description = "lxdtest " + alias
	fp, err := devimage.Import(Ctx(t), c, opts, alias)
	if fp != "" {
		t.Cleanup(func() {
			if err := c.DeleteImage(context.Background(), fp); err != nil {
				t.Errorf("clean up image %s: %v", fp, err)
			}
		})
	}
	if err != nil {
		t.Fatalf("import image: %v", err)
	}
	return alias, fp
}

// Cleanup deletes instance name when the test ends.
func Cleanup(t testing.TB, c *lxd.Client, name string) {
	t.Helper()
	t.Cleanup(func() {
		if err := c.Delete(context.Background(), name); err != nil {
			t.Errorf("clean up instance %s: %v", name, err)
		}
	})
}

// Profile creates a uniquely named profile with these devices and deletes
// it when the test ends (after the instances created later, since clean-ups
// run last-in first-out).
func Profile(t testing.TB, c *lxd.Client, devices map[string]map[string]string) string {
	t.Helper()
	name := Name(t)
	if err := c.EnsureProfile(Ctx(t), name, devices); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.DeleteProfile(context.Background(), name); err != nil {
			t.Errorf("clean up profile %s: %v", name, err)
		}
	})
	return name
}

// ProxyDevice makes tcp 127.0.0.1:port inside the instance lead to the
// host's 127.0.0.1:port.
func ProxyDevice(port int) map[string]string {
	addr := "tcp:127.0.0.1:" + strconv.Itoa(port)
	return map[string]string{"type": "proxy", "bind": "instance", "listen": addr, "connect": addr}
}

// WaitGone polls until instance name no longer exists, failing t after
// timeout.
func WaitGone(t testing.TB, c *lxd.Client, name string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_, err := c.Get(context.Background(), name)
		if errors.Is(err, fleet.ErrNotFound) {
			return
		}
		if err != nil {
			t.Fatalf("get instance %s: %v", name, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s still exists after %s", name, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BuildGo builds Go package pkg (an import path in this module, or a
// directory) as a static binary in a temporary directory and returns its
// path.
func BuildGo(t testing.TB, pkg string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("build %s: %v", pkg, err)
	}
	out := filepath.Join(t.TempDir(), path.Base(pkg))
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}
