package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/browsertest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
)

const walkREADME = "../../deployments/README.md"

// readmeCommands returns the lxd-gha-autoscaler command lines of the
// README's sh blocks, in order, without their comments, split into words
// (none is quoted).
func readmeCommands(t *testing.T) [][]string {
	t.Helper()
	raw, err := os.ReadFile(walkREADME)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	in := false
	for sc := bufio.NewScanner(bytes.NewReader(raw)); sc.Scan(); {
		line := sc.Text()
		switch {
		case line == "```sh":
			in = true
		case line == "```":
			in = false
		case in && strings.HasPrefix(line, "lxd-gha-autoscaler "):
			line, _, _ = strings.Cut(line, "#")
			out = append(out, strings.Fields(line)[1:])
		}
	}
	return out
}

// walkBy tells, for each lxd-gha-autoscaler command the README gives,
// where it runs, when not here.
var walkBy = map[string]string{
	"image build": "TestImageBuildCommand (cmd/server) runs it with a runner tarball of its own: this walk has no network to fetch GitHub's",
}

// TestDeploymentsWalk follows deployments/README.md from its step 2, with
// the lxd-gha-autoscaler commands as written there: the names replaced
// (ORG, runners.example.com, /etc/lxd-gha-autoscaler), GitHub the
// stand-in (setup gets --github-url, --listen on a free port, and --dir
// in the test's directory rather than /etc), the
// proxy a reverse proxy of POST /webhook, and headless Chromium the
// organization's owner. The config setup wrote is edited as step 3 says
// (here: the test's image, a profile that reaches the stand-in, and ports
// and paths of the test's own). Then a job runs through, and the CLI,
// pointed at the service by LXD_GHA_AUTOSCALER_CONFIG, shows it.
func TestDeploymentsWalk(t *testing.T) {
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	c := lxdtest.Connect(t) // skips without LXD
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	etc := filepath.Join(dir, "etc")

	fake, err := ghfake.New(ghfake.Options{Org: "acme", InstallationID: 7, PathPrefix: "api/v3", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	fakeURL, _ := url.Parse(fake.URL())
	profile := lxdtest.Profile(t, c, map[string]map[string]string{
		"ghfake": {"type": "proxy", "bind": "instance", "listen": "tcp:" + fakeURL.Host, "connect": "tcp:" + fakeURL.Host},
	})
	listen := "127.0.0.1:" + freePort(t)
	target, _ := url.Parse("http://" + listen)
	mux := http.NewServeMux()
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0) // GitHub's ping at the App's creation finds no service yet
	mux.Handle("POST /webhook", rp)
	proxy := httptest.NewServer(mux)
	t.Cleanup(proxy.Close)

	owner := ""
	if os.Getuid() == 0 {
		owner = "nobody"
	}
	subst := strings.NewReplacer("ORG", "acme", "https://runners.example.com", proxy.URL, "/etc/lxd-gha-autoscaler", etc)
	var logs fleettest.LogBuffer
	command := func(args []string, extra ...string) *exec.Cmd {
		var a []string
		for i := 0; i < len(args); i++ {
			if args[i] == "--owner" && owner == "" {
				i++ // not root: the files stay the test's
				continue
			}
			if i > 0 && args[i-1] == "--owner" {
				a = append(a, owner)
				continue
			}
			a = append(a, subst.Replace(args[i]))
		}
		cmd := exec.CommandContext(ctx, binPath, append(a, extra...)...)
		cmd.Env = append(os.Environ(), "LXD_GHA_AUTOSCALER_CONFIG="+filepath.Join(etc, "config.yaml"))
		return cmd
	}
	ran := map[string]bool{}
	readme := readmeCommands(t)
	find := func(name string) []string {
		t.Helper()
		for _, args := range readme {
			if strings.Join(args[:min(len(args), len(strings.Fields(name)))], " ") == name {
				ran[name] = true
				return args
			}
		}
		t.Fatalf("%s gives no lxd-gha-autoscaler %s command", walkREADME, name)
		return nil
	}
	// Every command the README gives runs here, or says where it does.
	defer func() {
		for _, args := range readme {
			name := args[0]
			if len(args) > 1 && args[0] == "image" {
				name += " " + args[1]
			}
			if !ran[name] && walkBy[name] == "" && !t.Failed() {
				t.Errorf("%s gives lxd-gha-autoscaler %s, which this walk does not run", walkREADME, strings.Join(args, " "))
			}
		}
	}()

	// Step 2: setup, clicked through in the browser.
	// --dir too: the README's setup writes into /etc/lxd-gha-autoscaler,
	// its default, and this one must not.
	setup := command(find("setup"), "--github-url", fake.WebURL(), "--listen", "127.0.0.1:0", "--dir", etc)
	stdout, err := setup.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	setup.Stderr = &logs
	if err := setup.Start(); err != nil {
		t.Fatal(err)
	}
	var setupOut bytes.Buffer
	form := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`Open (http://127\.0\.0\.1:\d+/) in a browser`)
		sc := bufio.NewScanner(io.TeeReader(stdout, &setupOut))
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				form <- m[1]
			}
		}
		close(form)
	}()
	formURL, ok := <-form
	if !ok {
		t.Fatalf("setup printed no form address:\n%s%s", setupOut.String(), logs.String())
	}
	b := browsertest.Start(t)
	b.Open(formURL)
	b.Click("#create")
	b.WaitFor("GitHub's confirmation", `!!document.getElementById("submit")`)
	b.Click("#submit")
	b.WaitFor("the way back to setup", `location.pathname === "/callback" && !!document.getElementById("result")`)
	for range form {
	}
	if err := setup.Wait(); err != nil {
		t.Fatalf("setup: %v\n%s%s", err, setupOut.String(), logs.String())
	}
	install := regexp.MustCompile(`(?m)^\s+(http://\S+/installations/new)$`).FindStringSubmatch(setupOut.String())
	if install == nil {
		t.Fatalf("setup printed no installation page:\n%s", setupOut.String())
	}

	// Step 3: install the App, edit the config, start the service.
	b.Open(install[1])
	b.Click("#submit")
	b.WaitFor("the installation", `document.title === "Installed"`)
	cfgPath := filepath.Join(etc, "config.yaml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	prefix := "w" + randHex(3) + "-"
	edited := string(cfg)
	for _, r := range [][2]string{
		{"listen: 127.0.0.1:8080", "listen: " + listen},
		{"admin_listen: unix:/run/lxd-gha-autoscaler/admin.sock", "admin_listen: unix:" + filepath.Join(dir, "admin.sock")},
		{"state_dir: /var/lib/lxd-gha-autoscaler", "state_dir: " + filepath.Join(dir, "state")},
		{"runner_prefix: gha-", "runner_prefix: " + prefix},
		{"    image: gha-runner", "    image: " + imageAlias},
		{"    profiles: [hardened-container]", "    profiles: [default, " + profile + "]"},
	} {
		if !strings.Contains(edited, r[0]) {
			t.Fatalf("the config setup wrote has no %q:\n%s", r[0], cfg)
		}
		edited = strings.Replace(edited, r[0], r[1], 1)
	}
	edited = regexp.MustCompile(`(?m)^  socket: .*$`).ReplaceAllString(edited, "  socket: "+strconv.Quote(lxdtest.SocketPath()))
	if err := os.WriteFile(cfgPath, []byte(edited), 0o640); err != nil {
		t.Fatal(err)
	}
	serve := exec.Command(binPath, "serve", "--config", cfgPath)
	serve.Stdout, serve.Stderr = &logs, &logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { _ = serve.Wait(); close(served) }()
	t.Cleanup(func() {
		_ = serve.Process.Signal(syscall.SIGTERM)
		select {
		case <-served:
		case <-time.After(30 * time.Second):
			_ = serve.Process.Kill()
			<-served
		}
		all, _ := c.List(context.Background())
		for _, in := range all {
			if strings.HasPrefix(in.Name, prefix) {
				_ = c.Delete(context.Background(), in.Name)
			}
		}
		if t.Failed() {
			t.Logf("setup's output:\n%s\nlogs:\n%s", setupOut.String(), logs.String())
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get("http://" + listen + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case <-served:
			t.Fatalf("serve exited:\n%s", logs.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("serve not healthy")
		}
	}

	// GitHub pinged the App's webhook URL when setup made it, before the
	// service could run: the service has it redelivered at its start, and
	// it is the first webhook the service records.
	for deadline := time.Now().Add(30 * time.Second); ; {
		out, err := command(find("status")).CombinedOutput()
		if err == nil && regexp.MustCompile(`(?m)^last webhook received at .* \(ping\)$`).Match(out) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the App's first ping was not recorded: %v\n%s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Step 4: doctor, with the ping through the proxy.
	out, err := command(find("doctor")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "doctor: all checks passed") ||
		!strings.Contains(string(out), "and the service recorded it") {
		t.Fatalf("doctor: %v\n%s", err, out)
	}

	// Step 5: the first job, and the CLI.
	id := fake.QueueJob(ghfake.JobSpec{Labels: []string{"self-hosted", "linux", "x64"}, Repo: "acme/app", Duration: time.Second})
	if _, err := fake.WaitJob(ctx, id, func(j ghfake.JobView) bool { return j.Status == ghfake.StatusCompleted }); err != nil {
		t.Fatalf("the first job: %v", err)
	}
	if j, _ := fake.Job(id); j.Conclusion != ghfake.ConclusionSuccess || !strings.HasPrefix(j.RunnerName, prefix+"linux-x64-") {
		t.Fatalf("the first job: %+v", j)
	}
	subst = strings.NewReplacer("JOB_ID", strconv.FormatInt(id, 10))
	for name, want := range map[string][]string{
		"status": {"ready\n", "last webhook received at ", "linux-x64"},
		"jobs":   {fmt.Sprint(id), "linux-x64", "acme/app"},
		"job":    {fmt.Sprintf("job %d  acme/app", id), "launched", "in_progress"},
	} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, err := command(find(name)).CombinedOutput()
			missing := ""
			for _, w := range append(want, "completed (success)") {
				if !strings.Contains(string(out), w) {
					missing = w
				}
			}
			if err == nil && missing == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v, no %q in:\n%s", name, err, missing, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}
