package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
)

// On a two-member LXD cluster, a pool with target "@gpu" places every
// runner on the member in that cluster group. Without the target they all
// land on node1, the one member left in the default group.
func TestClusterTargetPlacement(t *testing.T) {
	lxdtest.Connect(t) // skips without LXD
	sock := startCluster(t)
	e := newEnv(t, options{lxdSocket: sock, extraPool: `    target: "@gpu"`})
	var ids []int64
	for i := 0; i < 3; i++ {
		ids = append(ids, e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 4 * time.Second}))
	}
	placed := map[string]string{}
	e.eventually("three runners placed", time.Minute, func() bool {
		for _, in := range e.instances() {
			if placed[in.Name] == "" {
				placed[in.Name] = location(t, sock, in.Name)
			}
		}
		return len(placed) == 3
	})
	e.waitCompleted(ids...)
	e.waitNoInstances()
	for _, id := range ids {
		if j, _ := e.fake.Job(id); j.Conclusion != ghfake.ConclusionSuccess {
			t.Errorf("job %d: %s", id, j.Conclusion)
		}
	}
	for name, at := range placed {
		if at != "node2" {
			t.Errorf("%s placed on %q, want node2 (the only member of @gpu)", name, at)
		}
	}
	if n := e.jitCalls(); n != 3 {
		t.Fatalf("launches = %d, want 3", n)
	}
}

// location returns the cluster member an instance runs on ("" if gone).
func location(t *testing.T, sock, name string) string {
	out, err := lxcAt(filepath.Dir(sock), "list", name, "--format", "csv", "-c", "nL")
	if err != nil {
		t.Logf("lxc list %s: %v", name, err)
		return ""
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if n, loc, ok := strings.Cut(line, ","); ok && n == name {
			return loc
		}
	}
	return ""
}

// startCluster starts a two-member LXD cluster on this machine: one daemon
// per member, each with its own LXD_DIR and loopback address, a dir
// storage pool, and node2 alone in cluster group "gpu". It returns node1's
// unix socket, which serves the whole cluster, and stops both daemons when
// the test ends.
func startCluster(t *testing.T) string {
	t.Helper()
	base, err := os.MkdirTemp("", "e2e-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	// Containers' root users are mapped to unprivileged ids, which must be
	// able to pass through to their root file systems below.
	if err := os.Chmod(base, 0o711); err != nil {
		t.Fatal(err)
	}
	// Loopback addresses of their own, so a leftover cluster of an earlier
	// run cannot be in the way.
	addr := fmt.Sprintf("127.%d.%d.", 1+rand.IntN(250), 1+rand.IntN(250))
	n1, n2 := filepath.Join(base, "node1"), filepath.Join(base, "node2")
	var daemons []*exec.Cmd
	t.Cleanup(func() {
		for _, dir := range []string{n2, n1} {
			cmd := exec.Command("lxd", "shutdown", "--timeout", "60")
			cmd.Env = append(os.Environ(), "LXD_DIR="+dir)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Logf("lxd shutdown (%s): %v %s", dir, err, out)
			}
		}
		for _, d := range daemons {
			_ = d.Process.Kill()
			_ = d.Wait()
		}
		if err := os.RemoveAll(base); err != nil {
			t.Logf("remove %s: %v", base, err)
		}
	})
	for _, dir := range []string{n1, n2} {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			t.Fatal(err)
		}
		d, err := spawnLXD(dir, dir+".log")
		if err != nil {
			t.Fatal(err)
		}
		daemons = append(daemons, d)
		wait := exec.Command("lxd", "waitready", "--timeout", "60")
		wait.Env = d.Env
		if out, err := wait.CombinedOutput(); err != nil {
			t.Fatalf("lxd waitready (%s): %v %s", dir, err, out)
		}
	}
	must := func(dir string, args ...string) string {
		t.Helper()
		out, err := lxcAt(dir, args...)
		if err != nil {
			t.Fatalf("lxc %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	must(n1, "config", "set", "core.https_address", addr+"11:8443")
	must(n1, "storage", "create", "local", "dir")
	must(n1, "profile", "device", "add", "default", "root", "disk", "path=/", "pool=local")
	must(n1, "cluster", "enable", "node1")
	lines := strings.Split(strings.TrimSpace(must(n1, "cluster", "add", "node2")), "\n")
	token := strings.TrimSpace(lines[len(lines)-1])
	preseed := fmt.Sprintf(`cluster:
  enabled: true
  server_name: node2
  server_address: %[1]s12:8443
  cluster_address: %[1]s11:8443
  cluster_token: %[2]s
  member_config:
  - entity: storage-pool
    name: local
    key: source
    value: ""
`, addr, token)
	join := exec.Command("lxd", "init", "--preseed")
	join.Env = append(os.Environ(), "LXD_DIR="+n2)
	join.Stdin = strings.NewReader(preseed)
	if out, err := join.CombinedOutput(); err != nil {
		t.Fatalf("join node2: %v %s", err, out)
	}
	must(n1, "cluster", "group", "create", "gpu")
	must(n1, "cluster", "group", "assign", "node2", "gpu")
	return filepath.Join(n1, "unix.socket")
}

// lxcAt runs lxc against the daemon in LXD_DIR dir.
func lxcAt(dir string, args ...string) (string, error) {
	cmd := exec.Command("lxc", args...)
	cmd.Env = append(os.Environ(), "LXD_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, out)
	}
	return string(out), nil
}
