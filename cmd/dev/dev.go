package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/app"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/devimage"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghapp"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/scheduler"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/store"
)

// Sockets tried, in order, when --lxd-socket is not given: the deb's, then
// the snap's.
var devSockets = []string{"/var/lib/lxd/unix.socket", "/var/snap/lxd/common/lxd/unix.socket"}

// devCommand runs the real service against the local LXD with the GitHub
// stand-in in-process: it builds a tiny busybox image holding this binary
// as the runner, queues a few sample jobs, and prints each job's timeline.
func devCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lxd-gha-autoscaler-dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jobs := fs.Int("jobs", 5, "sample self-hosted jobs to queue")
	maxInstances := fs.Int("max-instances", 3, "limits.max_instances")
	socket := fs.String("lxd-socket", "", "LXD unix socket (default: the deb's, then the snap's)")
	logLevel := fs.String("log-level", "warn", "service log level: debug, info, warn or error")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	keep := fs.String("keep", "", "after the jobs, keep the service running with its status page and admin API on this loopback host:port (e.g. 127.0.0.1:8090) until interrupted")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *jobs < 1 || *maxInstances < 1 {
		return errors.New("dev: --jobs and --max-instances must be at least 1")
	}
	lvl, err := zerolog.ParseLevel(*logLevel)
	if err != nil || *logLevel == "" {
		return fmt.Errorf("dev: log level %q: want debug, info, warn or error", *logLevel)
	}
	if *keep != "" {
		if host, _, err := net.SplitHostPort(*keep); err != nil || !net.ParseIP(host).IsLoopback() {
			return fmt.Errorf("dev: --keep %q: want a loopback host:port such as 127.0.0.1:8090", *keep)
		}
	}
	log := zerolog.New(zerolog.ConsoleWriter{Out: stderr, TimeFormat: "15:04:05.000"}).Level(lvl).With().Timestamp().Logger()
	// The service runs until the jobs are done, or with --keep until
	// interrupted; --timeout bounds only the wait for the jobs.
	interrupted := ctx
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	if *socket == "" {
		*socket = devSockets[0]
		for _, s := range devSockets {
			if _, err := os.Stat(s); err == nil {
				*socket = s
				break
			}
		}
	}
	lx, err := lxd.Connect(ctx, lxd.Config{Socket: *socket})
	if err != nil {
		return fmt.Errorf("dev needs a local LXD (try: sudo bash .ci/setup-lxd.sh): %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "lxd-gha-autoscaler-dev-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	suffix := randomHex(4)
	// Clean-ups must run even when ctx has ended.
	cleanupCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), time.Minute)
	}

	fmt.Fprintf(stdout, "building the dev runner image (busybox + this binary)...\n")
	alias := "lxd-gha-autoscaler-dev-" + suffix
	fp, err := devimage.Import(ctx, lx, devimage.Options{Binary: self, Init: []string{devimage.DefaultBinaryPath, "fake-runner"}}, alias)
	if err != nil {
		return fmt.Errorf("dev image (the binary must be static: build with CGO_ENABLED=0): %w", err)
	}
	defer func() {
		c, cc := cleanupCtx()
		defer cc()
		_ = lx.DeleteImage(c, fp)
	}()

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	secret := []byte(randomHex(20))
	fake, err := ghfake.New(ghfake.Options{
		AppID: 1, AppPublicKey: &key.PublicKey, WebhookSecret: secret, Org: "dev-org", InstallationID: 1,
		Log: zerolog.Nop(),
	})
	if err != nil {
		return err
	}
	defer fake.Close()
	u, err := url.Parse(fake.URL())
	if err != nil {
		return err
	}
	// The runner reaches the stand-in on its own loopback, through a proxy
	// device: no other network.
	profile := "lxd-gha-autoscaler-dev-" + suffix
	err = lx.EnsureProfile(ctx, profile, map[string]map[string]string{
		"ghfake": {"type": "proxy", "bind": "instance",
			"listen": "tcp:" + u.Host, "connect": "tcp:" + u.Host},
	})
	if err != nil {
		return err
	}
	defer func() {
		c, cc := cleanupCtx()
		defer cc()
		_ = lx.DeleteProfile(c, profile)
	}()

	st, err := store.Open(ctx, tmp, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	gh, err := ghapp.New(ghapp.Config{
		APIURL: fake.URL(), AppID: 1,
		PrivateKey: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
	}, log)
	if err != nil {
		return err
	}
	labels := []string{"self-hosted", "linux", "x64"}
	a, err := app.New(app.Config{WebhookSecret: secret, Scheduler: scheduler.Config{
		MaxInstances: *maxInstances, NamePrefix: "dev" + suffix[:4] + "-", RegistrationTimeout: 2 * time.Minute,
		Pools: []scheduler.Pool{{Name: "linux", Labels: labels, Image: alias, Profiles: []string{"default", profile}}},
	}, AdminListen: *keep}, app.Deps{State: st, Instances: lx, GitHub: gh, Deliveries: gh, Log: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fake.SetWebhookURL("http://" + ln.Addr().String() + "/webhook")
	runCtx, stop := context.WithCancel(interrupted)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx, ln) }()
	defer func() {
		stop()
		<-done
	}()

	fmt.Fprintf(stdout, "service on %s, GitHub stand-in on %s; queueing %d jobs (max %d instances) and one for GitHub-hosted runners\n",
		ln.Addr(), fake.URL(), *jobs, *maxInstances)
	var ids []int64
	for i := 0; i < *jobs; i++ {
		ids = append(ids, fake.QueueJob(ghfake.JobSpec{
			Labels: []string{"self-hosted", "linux"}, Repo: "dev-org/app", Name: fmt.Sprintf("build-%d", i+1),
			Duration: time.Duration(1+i%3) * time.Second,
		}))
	}
	hosted := fake.QueueJob(ghfake.JobSpec{Labels: []string{"ubuntu-latest"}, Repo: "dev-org/app", Name: "lint"})

	err = fake.WaitJobs(ctx, func(js []ghfake.JobView) bool {
		for _, j := range js {
			if j.ID != hosted && j.Status != ghfake.StatusCompleted {
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("waiting for the jobs: %w", err)
	}
	// Wait for the instances to be deleted too.
	for {
		var live []fleet.Runner
		if err := st.View(ctx, func(tx fleet.Tx) (err error) { live, err = tx.LiveRunners(); return err }); err != nil {
			return err
		}
		if len(live) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for instances to be deleted: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err := printTimelines(ctx, stdout, st, append(ids, hosted)); err != nil {
		return err
	}
	if *keep != "" {
		fmt.Fprintf(stdout, "\nthe service keeps running: status page http://%s/, admin API http://%s/api/status; Ctrl-C stops it and cleans up\n", *keep, *keep)
		<-interrupted.Done()
	}
	return nil
}

// printTimelines writes one line per job: each step as an offset from the
// moment its queued event was recorded.
func printTimelines(ctx context.Context, w io.Writer, st fleet.State, ids []int64) error {
	var jobs []fleet.Job
	var runners []fleet.Runner
	err := st.View(ctx, func(tx fleet.Tx) (err error) {
		if jobs, err = tx.Jobs(fleet.JobFilter{}); err != nil {
			return err
		}
		runners, err = tx.Runners(0)
		return err
	})
	if err != nil {
		return err
	}
	byName := map[string]fleet.Runner{}
	launches := 0
	for _, r := range runners {
		byName[r.Name] = r
		if r.RunnerID != 0 {
			launches++
		}
	}
	want := map[int64]bool{}
	for _, id := range ids {
		want[id] = true
	}
	sort.Slice(jobs, func(i, k int) bool { return jobs[i].ID < jobs[k].ID })
	fmt.Fprintln(w, "\njob timelines (offsets from queued):")
	for _, j := range jobs {
		if !want[j.ID] {
			continue
		}
		if j.State == fleet.JobIgnored {
			fmt.Fprintf(w, "  job %d %v: ignored (%s)\n", j.ID, j.Labels, j.Reason)
			continue
		}
		r := byName[j.RunnerName]
		off := func(t time.Time) string {
			if t.IsZero() {
				return "?"
			}
			return fmt.Sprintf("+%.2fs", t.Sub(j.QueuedAt).Seconds())
		}
		steps := []string{
			"queued",
			"launched " + off(r.CreatedAt),
			"online " + off(r.OnlineAt),
			"running " + off(j.StartedAt) + " on " + j.RunnerName,
			"completed " + off(j.CompletedAt) + " (" + j.Conclusion + ")",
			"deleted " + off(r.EndedAt),
		}
		fmt.Fprintf(w, "  job %d [%s]: %s\n", j.ID, j.Pool, strings.Join(steps, " → "))
	}
	fmt.Fprintf(w, "\n%d runners launched for %d jobs; every instance deleted.\n", launches, len(ids)-1)
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// fakeRunner is the stand-in's runner. As init of a dev or test instance
// it reads its JIT config through /dev/lxd/sock; with --from-env it plays
// GitHub's runner in a real runner image, whose bootstrap hands the config
// over in ACTIONS_RUNNER_INPUT_JITCONFIG.
func fakeRunner(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) == 1 && args[0] == "--from-env" {
		cfg := os.Getenv("ACTIONS_RUNNER_INPUT_JITCONFIG")
		if cfg == "" {
			return errors.New("fake-runner: ACTIONS_RUNNER_INPUT_JITCONFIG is not set")
		}
		return ghfake.RunRunner(ctx, ghfake.RunnerOptions{Log: stderr, JITConfig: fleet.Secret(cfg)})
	}
	return ghfake.RunRunner(ctx, ghfake.RunnerOptions{Log: stderr, BringUpLoopback: true})
}
