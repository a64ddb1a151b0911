package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/devimage"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
)

// The cluster tests share one real three-member LXD cluster on this
// machine, started by the first of them and stopped when the package's
// tests end: one lxd daemon per member, each with its own LXD_DIR and
// loopback address (127.X.Y.11, .12 and .13, port 8443, X and Y random so
// that a leftover of an earlier run is never in the way). node1 and node2
// are in cluster group cpu, node3 alone in group gpu. The service reaches
// it over HTTPS with a client certificate of its own, trusted by
// `lxd-gha-autoscaler lxd trust` with a token restricted to the project,
// and the server certificate pinned; the tests see LXD through a member's
// unix socket.
//
// Each test leaves the cluster as it found it: every member up, none
// drained or evacuated.
type testCluster struct {
	base    string
	addr    string // "127.X.Y."
	members []*clusterMember
	image   string // the runner image, imported once

	// The service's credentials for the cluster, written by lxd trust.
	clientCert, clientKey, serverCert string
}

type clusterMember struct {
	name, dir, addr string
	mu              sync.Mutex
	cmd             *exec.Cmd // the daemon; nil while it is down
}

var (
	clusterOnce sync.Once
	cluster     *testCluster
	clusterErr  error
)

// sharedCluster returns the package's cluster, starting it on first use;
// it skips without LXD.
func sharedCluster(t testing.TB) *testCluster {
	t.Helper()
	lxdtest.Connect(t) // skips without LXD
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	clusterOnce.Do(func() {
		began := time.Now()
		cluster, clusterErr = startCluster()
		if clusterErr == nil {
			fmt.Fprintf(os.Stderr, "e2e: three-member LXD cluster at %s11-13:8443 ready in %v\n", cluster.addr, time.Since(began).Round(100*time.Millisecond))
		}
	})
	if clusterErr != nil {
		t.Fatalf("start the LXD cluster: %v", clusterErr)
	}
	t.Cleanup(func() {
		cluster.check(t)
		if t.Failed() {
			cluster.logTails(t, 40)
		}
	})
	return cluster
}

// stopSharedCluster stops the cluster if a test started it.
func stopSharedCluster() {
	if cluster != nil {
		cluster.stop()
	}
}

// memberBinary is the daemon's binary under a name of its own: the test
// that kills the machine's LXD daemon (lxdrestart_test.go) and
// .ci/setup-lxd.sh find that daemon by the command line `lxd --group
// root`, and must not take a member of this cluster for it, or kill it.
const memberBinary = "lxd-member"

func startCluster() (_ *testCluster, err error) {
	base, err := os.MkdirTemp("", "e2e-cluster-")
	if err != nil {
		return nil, err
	}
	// Containers' root users are mapped to unprivileged ids, which must be
	// able to pass through to their root file systems below.
	if err := os.Chmod(base, 0o711); err != nil {
		return nil, err
	}
	tc := &testCluster{base: base, addr: fmt.Sprintf("127.%d.%d.", 1+rand.IntN(250), 1+rand.IntN(250))}
	defer func() {
		if err != nil {
			tc.stop()
		}
	}()
	lxdBin, err := exec.LookPath("lxd")
	if err != nil {
		return nil, err
	}
	if err := os.Mkdir(filepath.Join(base, "bin"), 0o755); err != nil {
		return nil, err
	}
	if err := os.Symlink(lxdBin, filepath.Join(base, "bin", memberBinary)); err != nil {
		return nil, err
	}
	for i := 1; i <= 3; i++ {
		m := &clusterMember{name: fmt.Sprint("node", i), dir: filepath.Join(base, fmt.Sprint("node", i)), addr: fmt.Sprintf("%s1%d:8443", tc.addr, i)}
		if err := os.Mkdir(m.dir, 0o711); err != nil {
			return nil, err
		}
		tc.members = append(tc.members, m)
	}
	// The daemons start together; each is set up once it answers.
	for _, m := range tc.members {
		if err := tc.spawn(m); err != nil {
			return nil, err
		}
	}
	for _, m := range tc.members {
		if out, err := m.lxd("waitready", "--timeout", "60"); err != nil {
			return nil, fmt.Errorf("%s: lxd waitready: %v %s", m.name, err, out)
		}
	}
	n1 := tc.members[0]
	for _, args := range [][]string{
		{"config", "set", "core.https_address", n1.addr},
		{"storage", "create", "local", "dir"},
		{"profile", "device", "add", "default", "root", "disk", "path=/", "pool=local"},
		{"cluster", "enable", n1.name},
	} {
		if _, err := n1.lxc(args...); err != nil {
			return nil, err
		}
	}
	for _, m := range tc.members[1:] {
		out, err := n1.lxc("cluster", "add", m.name)
		if err != nil {
			return nil, err
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		preseed := fmt.Sprintf(`cluster:
  enabled: true
  server_name: %s
  server_address: %s
  cluster_address: %s
  cluster_token: %s
  member_config:
  - entity: storage-pool
    name: local
    key: source
    value: ""
`, m.name, m.addr, n1.addr, strings.TrimSpace(lines[len(lines)-1]))
		join := exec.Command("lxd", "init", "--preseed")
		join.Env = append(os.Environ(), "LXD_DIR="+m.dir)
		join.Stdin = strings.NewReader(preseed)
		if out, err := join.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("join %s: %v %s", m.name, err, out)
		}
	}
	for _, args := range [][]string{
		{"cluster", "group", "create", "cpu"},
		{"cluster", "group", "create", "gpu"},
		{"cluster", "group", "assign", "node1", "default,cpu"},
		{"cluster", "group", "assign", "node2", "default,cpu"},
		{"cluster", "group", "assign", "node3", "gpu"},
	} {
		if _, err := n1.lxc(args...); err != nil {
			return nil, err
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := lxd.Connect(ctx, lxd.Config{Socket: n1.socket()})
	if err != nil {
		return nil, err
	}
	tc.image = "e2e-cluster-" + randHex(4)
	if _, err := devimage.Import(ctx, c, devimage.Options{Binary: runnerPath, Init: []string{devimage.DefaultBinaryPath, "fake-runner"}}, tc.image); err != nil {
		return nil, fmt.Errorf("import the runner image: %w", err)
	}

	// The service's certificate, trusted the way an operator would: a
	// token restricted to the project, taken by `lxd trust` over HTTPS.
	out, err := n1.lxc("config", "trust", "add", "--name", "e2e-service", "--restricted", "--projects", "default")
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	token := strings.TrimSpace(lines[len(lines)-1])
	creds := filepath.Join(base, "service")
	if err := os.Mkdir(creds, 0o700); err != nil {
		return nil, err
	}
	tc.clientCert, tc.clientKey, tc.serverCert = filepath.Join(creds, "client.crt"), filepath.Join(creds, "client.key"), filepath.Join(creds, "server.crt")
	cfg := filepath.Join(creds, "lxd.yaml")
	if err := os.WriteFile(cfg, []byte(tc.lxdYAML()), 0o600); err != nil {
		return nil, err
	}
	trust := exec.Command(binPath, "lxd", "trust", "--config", cfg, "--token", token)
	if out, err := trust.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("lxd trust: %v\n%s", err, out)
	} else if !strings.Contains(string(out), "restricted to project(s) default") {
		return nil, fmt.Errorf("lxd trust did not say the certificate is restricted to the project:\n%s", out)
	}
	return tc, nil
}

// lxdYAML is the config's lxd: section (with its key) for the service:
// every member's address, node1's first.
func (tc *testCluster) lxdYAML() string {
	var urls []string
	for _, m := range tc.members {
		urls = append(urls, "https://"+m.addr)
	}
	return fmt.Sprintf("lxd:\n  url: [%s]\n  client_cert: %s\n  client_key: %s\n  server_cert: %s\n",
		strings.Join(urls, ", "), tc.clientCert, tc.clientKey, tc.serverCert)
}

// serviceLXD is lxdYAML's body, for options.lxdYAML.
func (tc *testCluster) serviceLXD() string {
	return strings.TrimSuffix(strings.TrimPrefix(tc.lxdYAML(), "lxd:\n"), "\n")
}

func (tc *testCluster) member(name string) *clusterMember {
	for _, m := range tc.members {
		if m.name == name {
			return m
		}
	}
	panic("no member " + name)
}

func (m *clusterMember) socket() string { return filepath.Join(m.dir, "unix.socket") }

func (m *clusterMember) lxc(args ...string) (string, error) {
	out, err := lxcAt(m.dir, args...)
	if err != nil {
		return "", fmt.Errorf("%s: lxc %s: %w", m.name, strings.Join(args, " "), err)
	}
	return out, nil
}

func (m *clusterMember) lxd(args ...string) (string, error) {
	cmd := exec.Command("lxd", args...)
	cmd.Env = append(os.Environ(), "LXD_DIR="+m.dir)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// spawn starts a member's daemon in a session of its own.
func (tc *testCluster) spawn(m *clusterMember) error {
	cmd := exec.Command("setsid", "nohup", filepath.Join(tc.base, "bin", memberBinary), "--group", "root")
	cmd.Env = append(os.Environ(), "LXD_DIR="+m.dir)
	// Not the test's directory: the daemon outlives it, and its children
	// (rsync for snapshots) fail once their inherited cwd is deleted.
	cmd.Dir = "/"
	logf, err := os.OpenFile(m.dir+".log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", m.name, err)
	}
	m.mu.Lock()
	m.cmd = cmd
	m.mu.Unlock()
	go func() { _ = cmd.Wait() }()
	return nil
}

// start starts a member that was killed and waits until it answers.
func (tc *testCluster) start(t *testing.T, name string) {
	t.Helper()
	m := tc.member(name)
	if err := tc.spawn(m); err != nil {
		t.Fatal(err)
	}
	if out, err := m.lxd("waitready", "--timeout", "120"); err != nil {
		t.Fatalf("%s: lxd waitready: %v %s", name, err, out)
	}
}

// kill does to a member what the loss of its host does: kill -9 of its
// daemon and of its containers (with the proxy processes of their
// devices). A daemon killed alone leaves its containers running.
func (tc *testCluster) kill(t *testing.T, name string) {
	t.Helper()
	m := tc.member(name)
	m.mu.Lock()
	cmd := m.cmd
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		t.Fatalf("%s is not running", name)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s: %v", name, err)
	}
	killed := killContainers(m.dir)
	t.Logf("killed %s: its daemon, and the processes of %d containers", name, killed)
}

// killContainers kills the containers of the member in dir: each
// container's monitor ("[lxc monitor] DIR/containers NAME") and the
// container's init below it, then the proxy processes whose container is
// gone. It returns the number of containers.
func killContainers(dir string) int {
	procs := readProcs()
	var monitors []int
	for pid, p := range procs {
		if strings.HasPrefix(p.cmdline, "[lxc monitor] "+filepath.Join(dir, "containers")+" ") {
			monitors = append(monitors, pid)
		}
	}
	inits := map[int]bool{}
	for pid, p := range procs {
		if slices.Contains(monitors, p.ppid) {
			inits[pid] = true
		}
	}
	for pid := range inits {
		_ = syscall.Kill(pid, syscall.SIGKILL) // init of a pid namespace: the whole container goes
	}
	for _, pid := range monitors {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for pid, p := range procs {
		f := strings.Fields(p.cmdline)
		if len(f) > 3 && filepath.Base(f[0]) == "lxd" && f[1] == "forkproxy" && f[2] == "--" {
			if c, err := strconv.Atoi(f[3]); err == nil && inits[c] {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return len(monitors)
}

type proc struct {
	ppid    int
	cmdline string
}

func readProcs() map[int]proc {
	out := map[int]proc{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		cl, err := os.ReadFile(d + "/cmdline")
		if err != nil {
			continue
		}
		st, err := os.ReadFile(d + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces.
		rest := string(st[strings.LastIndexByte(string(st), ')')+1:])
		f := strings.Fields(rest)
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		out[pid] = proc{ppid: ppid, cmdline: strings.TrimSpace(strings.ReplaceAll(string(cl), "\x00", " "))}
	}
	return out
}

// check fails t unless the cluster is as tests expect to find it: every
// member online, none evacuated.
func (tc *testCluster) check(t testing.TB) {
	t.Helper()
	out, err := tc.members[1].lxc("cluster", "list", "--format", "csv")
	if err != nil {
		t.Errorf("cluster after the test: %v", err)
		return
	}
	if n := strings.Count(out, ",ONLINE,"); n != len(tc.members) {
		t.Errorf("cluster after the test: %d of %d members online:\n%s", n, len(tc.members), out)
	}
}

// logTails logs the last n lines of each member's daemon log.
func (tc *testCluster) logTails(t testing.TB, n int) {
	t.Helper()
	for _, m := range tc.members {
		b, err := os.ReadFile(m.dir + ".log")
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		t.Logf("%s's lxd log, last lines:\n%s", m.name, strings.Join(lines[max(0, len(lines)-n):], "\n"))
	}
}

// stop shuts every member down together (each waits for the others'
// quorum), kills what is left, and removes the cluster's files.
func (tc *testCluster) stop() {
	var wg sync.WaitGroup
	for _, m := range tc.members {
		wg.Go(func() {
			if out, err := m.lxd("shutdown", "--timeout", "60"); err != nil {
				fmt.Fprintf(os.Stderr, "e2e: lxd shutdown (%s): %v %s\n", m.name, err, out)
			}
		})
	}
	wg.Wait()
	for _, m := range tc.members {
		m.mu.Lock()
		if m.cmd != nil {
			_ = m.cmd.Process.Kill()
		}
		m.mu.Unlock()
		killContainers(m.dir)
	}
	// A member that was killed leaves its mounts behind.
	if f, err := os.Open("/proc/mounts"); err == nil {
		var mounts []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if fs := strings.Fields(sc.Text()); len(fs) > 1 && strings.HasPrefix(fs[1], tc.base+"/") {
				mounts = append(mounts, fs[1])
			}
		}
		f.Close()
		slices.Sort(mounts)
		for _, mnt := range slices.Backward(mounts) {
			_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	}
	if err := os.RemoveAll(tc.base); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: remove %s: %v\n", tc.base, err)
	}
}

// location returns the cluster member an instance runs on ("" if gone).
func (e *env) location(name string) string {
	for _, in := range e.instances() {
		if in.Name == name {
			return in.Location
		}
	}
	return ""
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

// launchedOn reads, from the service's log, the member each runner was
// launched on.
func (e *env) launchedOn() map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(e.logText(), "\n") {
		var l struct{ Message, Instance, Member string }
		if json.Unmarshal([]byte(line), &l) == nil && l.Message == "launching runner" {
			out[l.Instance] = l.Member
		}
	}
	return out
}

// On the cluster, through node1's unix socket: a pool with target "@gpu"
// places every runner on node3, the only member of that group.
func TestClusterTargetPlacement(t *testing.T) {
	tc := sharedCluster(t)
	sock := tc.members[0].socket()
	e := newEnv(t, options{lxdSocket: sock, image: tc.image, extraPool: `    target: "@gpu"`})
	var ids []int64
	for i := 0; i < 3; i++ {
		ids = append(ids, e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 4 * time.Second}))
	}
	placed := map[string]string{}
	e.eventually("three runners placed", time.Minute, func() bool {
		for _, in := range e.instances() {
			if placed[in.Name] == "" {
				placed[in.Name] = in.Location
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
		if at != "node3" {
			t.Errorf("%s placed on %q, want node3 (the only member of @gpu)", name, at)
		}
	}
	if n := e.jitCalls(); n != 3 {
		t.Fatalf("launches = %d, want 3", n)
	}
}
