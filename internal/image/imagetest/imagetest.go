// Package imagetest holds helpers for tests that build runner images on a
// real LXD: a shared Debian source image (debootstrapped once per machine
// and cached) and a small fake runner tarball with the real layout.
package imagetest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
)

// The source image of the tests: a debootstrap'ed Debian bookworm with
// systemd and curl. Debootstrapping takes about a minute, so the image
// tarball is cached on the machine and imported once under a fixed alias.
const (
	CacheDir       = "/var/cache/lxd-gha-autoscaler-test"
	Tarball        = CacheDir + "/bookworm-image.tar" // unified: metadata.yaml + rootfs/
	SourceAlias    = "lxd-gha-autoscaler-test-bookworm"
	debootstrapPkg = "systemd,systemd-sysv,curl,ca-certificates,passwd,login,util-linux"
)

var sourceOnce struct {
	sync.Mutex
	done bool
}

// Connect returns a client with room for big uploads and long builds, or
// skips t without LXD.
func Connect(t testing.TB) *lxd.Client {
	t.Helper()
	lxdtest.Connect(t) // skips without LXD
	c, err := lxd.Connect(context.Background(), lxd.Config{Socket: lxdtest.SocketPath(), OpTimeout: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// SourceImage returns the alias of the shared bookworm image, making it
// first if needed (debootstrap, installed with apt-get when missing, needs
// root and Debian's mirror, or $DEBIAN_MIRROR). It is never deleted: later
// runs reuse it.
func SourceImage(t testing.TB, c *lxd.Client) string {
	t.Helper()
	sourceOnce.Lock()
	defer sourceOnce.Unlock()
	if sourceOnce.done {
		return SourceAlias
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if fp, err := c.AliasTarget(ctx, SourceAlias); err != nil {
		t.Fatal(err)
	} else if fp != "" {
		sourceOnce.done = true
		return SourceAlias
	}
	if _, err := os.Stat(Tarball); err != nil {
		debootstrap(t, ctx)
	}
	f, err := os.Open(Tarball)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start := time.Now()
	if _, err := c.ImportImage(ctx, f, SourceAlias); err != nil {
		t.Fatalf("import %s: %v", Tarball, err)
	}
	t.Logf("imported %s as %s in %s", Tarball, SourceAlias, time.Since(start).Round(time.Second))
	sourceOnce.done = true
	return SourceAlias
}

// debootstrap builds Tarball, installing debootstrap if missing.
func debootstrap(t testing.TB, ctx context.Context) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("%s is missing and building it needs root", Tarball)
	}
	runCmd := func(name string, args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, tail(out))
		}
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Log("installing debootstrap")
		runCmd("apt-get", "install", "-y", "debootstrap")
	}
	if err := os.MkdirAll(CacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(CacheDir, "build-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	start := time.Now()
	t.Logf("debootstrap bookworm into %s (once per machine, about a minute)", dir)
	mirror := os.Getenv("DEBIAN_MIRROR")
	if mirror == "" {
		mirror = "http://deb.debian.org/debian"
	}
	runCmd("debootstrap", "--variant=minbase", "--include="+debootstrapPkg, "bookworm", filepath.Join(dir, "rootfs"), mirror)
	if err := os.WriteFile(filepath.Join(dir, "rootfs/etc/machine-id"), nil, 0o444); err != nil {
		t.Fatal(err)
	}
	meta := fmt.Sprintf("architecture: x86_64\ncreation_date: %d\nproperties:\n  architecture: x86_64\n  description: Debian bookworm minbase with systemd (lxd-gha-autoscaler tests)\n  os: debian\n  release: bookworm\n", time.Now().Unix())
	if err := os.WriteFile(filepath.Join(dir, "metadata.yaml"), []byte(meta), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := Tarball + ".tmp"
	runCmd("tar", "-C", dir, "--numeric-owner", "-cf", tmp, "metadata.yaml", "rootfs")
	if err := os.Rename(tmp, Tarball); err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s in %s", Tarball, time.Since(start).Round(time.Second))
}

func tail(b []byte) []byte {
	if len(b) > 4000 {
		return b[len(b)-4000:]
	}
	return b
}

// RecordPort is where the fake run.sh POSTs its record, inside the
// instance; a proxy device leads it to the test's server.
const RecordPort = 18080

// fakeRunSh records what the bootstrap gave it and POSTs that to the host.
var fakeRunSh = `#!/bin/sh
rec=$(mktemp)
{
	echo "argv0=$0"
	echo "argc=$#"
	for a in "$@"; do echo "arg=$a"; done
	if [ -n "${ACTIONS_RUNNER_INPUT_JITCONFIG+x}" ]; then
		echo "jit_set=yes"
		echo "jit=$ACTIONS_RUNNER_INPUT_JITCONFIG"
	else
		echo "jit_set=no"
	fi
	echo "user=$(id -un)"
	echo "pwd=$(pwd)"
	echo "--- ps"
	if command -v ps >/dev/null 2>&1; then
		ps -eo args
	else
		for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' <"$f" 2>/dev/null; echo; done
	fi
} >"$rec" 2>&1
curl -fsS --max-time 10 --data-binary @"$rec" http://127.0.0.1:` + strconv.Itoa(RecordPort) + `/record
rm -f "$rec"
exit 0
`

var fakeListener = `#!/bin/sh
if [ "${1:-}" = --version ]; then echo '` + FakeRunnerVersion + `'; exit 0; fi
echo "fake Runner.Listener" >&2
exit 1
`

// FakeRunnerVersion is what the fake Runner.Listener --version answers.
const FakeRunnerVersion = "2.999.0"

// FakeRunner writes a small runner tarball with the real layout (run.sh,
// config.sh, bin/Runner.Listener) and returns its path and sha256. Its
// run.sh records its argv, ACTIONS_RUNNER_INPUT_JITCONFIG (whether set,
// and its value), its user and directory, and every process's command line
// (after a "--- ps" line), POSTs that to 127.0.0.1:RecordPort/record
// inside the instance, and exits 0.
func FakeRunner(t testing.TB) (string, string) {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	now := time.Now()
	add := func(name string, mode int64, body string) {
		typ := byte(tar.TypeReg)
		if body == "" && mode&0o111 != 0 && name[len(name)-1] == '/' {
			typ = tar.TypeDir
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(body)), Typeflag: typ, ModTime: now}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	add("./bin/", 0o755, "")
	add("./run.sh", 0o755, fakeRunSh)
	add("./config.sh", 0o755, "#!/bin/sh\nexit 0\n")
	add("./bin/Runner.Listener", 0o755, fakeListener)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "actions-runner-linux-x64-2.999.0.tar.gz")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	return p, hex.EncodeToString(sum[:])
}
