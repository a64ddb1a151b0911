package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/devimage"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/store"
)

// BenchmarkJobOverhead compares, in one run, what the service spends per
// job with a bare `lxc launch --ephemeral` plus `lxc stop -f` of an image of
// the same size and the same profiles:
//
//	service = queued delivery recorded -> instance deleted, less the job's own
//	          run time at GitHub (in_progress -> completed); it holds the JIT
//	          config, state writes, LXD create+start, and stop+delete
//	bare    = lxc launch --ephemeral + lxc stop -f, whole lxc processes
//
// Launch (queued -> create+start returned) and teardown (completed ->
// deleted) are reported too; they overlap, since a job may run and complete
// before LXD's start operation returns. Jobs run one at a time. Run it with
//
//	go test ./internal/e2e -run '^$' -bench JobOverhead -benchtime 10x
func BenchmarkJobOverhead(b *testing.B) {
	if setupErr != nil {
		b.Fatal(setupErr)
	}
	n := b.N
	if n < 3 {
		n = 3
	}
	c := lxdtest.Connect(b)
	ctx := lxdtest.Ctx(b)

	// The service, idle until the bare runs are done; its profile (the
	// proxy device to the stand-in) is used by the bare runs too.
	e := newEnv(b, options{maxInstances: 1})

	// Bare: the same image content, with an init that just sleeps.
	sleeper, _ := lxdtest.Image(b, c, devimage.Options{Binary: runnerPath,
		Init: []string{"/bin/busybox", "sleep", "600"}})
	var bare []time.Duration
	for i := 0; i < n; i++ {
		name := lxdtest.Name(b)
		start := time.Now()
		if out, err := exec.CommandContext(ctx, "lxc", "launch", sleeper, name, "--ephemeral", "-p", "default", "-p", e.profile).CombinedOutput(); err != nil {
			b.Fatalf("lxc launch: %v\n%s", err, out)
		}
		if out, err := exec.CommandContext(ctx, "lxc", "stop", "-f", name).CombinedOutput(); err != nil {
			b.Fatalf("lxc stop: %v\n%s", err, out)
		}
		bare = append(bare, time.Since(start))
		lxdtest.WaitGone(b, c, name, 30*time.Second)
	}

	launch, teardown, total := serviceTimes(b, e, n)
	mb, ml, mt, ms := median(bare), median(launch), median(teardown), median(total)
	b.ReportMetric(float64(mb.Milliseconds()), "bare-ms/job")
	b.ReportMetric(float64(ml.Milliseconds()), "launch-ms/job")
	b.ReportMetric(float64(mt.Milliseconds()), "teardown-ms/job")
	b.ReportMetric(float64(ms.Milliseconds()), "service-ms/job")
	b.ReportMetric(100*(float64(ms)/float64(mb)-1), "overhead-%")
	b.Logf("%d jobs: bare %v, service %v (launch %v, teardown %v), overhead %+.1f%%",
		n, mb, ms, ml, mt, 100*(float64(ms)/float64(mb)-1))
}

// serviceTimes runs n jobs one at a time through e's service, stops it,
// and returns, per job, from its state: launch (queued -> create+start
// returned), teardown (completed -> deleted) and the service's own time
// (queued -> deleted, less the job's run time at GitHub).
func serviceTimes(b *testing.B, e *env, n int) (launch, teardown, total []time.Duration) {
	b.Helper()
	ctx := lxdtest.Ctx(b)
	for i := 0; i < n; i++ {
		id := e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app"})
		e.waitCompleted(id)
		e.waitNoInstances()
	}
	// LXD deletes an ephemeral instance when its runner exits, which may be
	// before the service's own delete has gone through and been recorded
	// (a delete that meets LXD's stop operation is retried a few seconds
	// later): stopping the service earlier leaves a timeline without its end.
	e.eventually("every teardown recorded", time.Minute, func() bool {
		return strings.Count(e.logText(), `"message":"instance deleted"`) >= n
	})
	e.stop(syscall.SIGTERM)

	// The state the service kept: SQLite in its directory, or with
	// E2E_STATE=postgres its database.
	var st *store.Store
	var err error
	if e.database != "" {
		st, err = store.OpenPostgres(context.Background(), e.database, "", store.Options{})
	} else {
		st, err = store.Open(context.Background(), filepath.Join(e.dir, "state"), store.Options{})
	}
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	var jobs []fleet.Job
	var runners []fleet.Runner
	err = st.View(ctx, func(tx fleet.Tx) (err error) {
		if jobs, err = tx.Jobs(fleet.JobFilter{}); err != nil {
			return err
		}
		runners, err = tx.Runners(0)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	byName := map[string]fleet.Runner{}
	for _, r := range runners {
		byName[r.Name] = r
	}
	for _, j := range jobs {
		r, ok := byName[j.RunnerName]
		if !ok || r.StartedAt.IsZero() || r.EndedAt.IsZero() {
			b.Fatalf("job %d: incomplete timeline (runner %q)", j.ID, j.RunnerName)
		}
		l, t := r.StartedAt.Sub(j.QueuedAt), r.EndedAt.Sub(j.CompletedAt)
		own := r.EndedAt.Sub(j.QueuedAt) - j.CompletedAt.Sub(j.StartedAt)
		launch, teardown, total = append(launch, l), append(teardown, t), append(total, own)
	}
	return launch, teardown, total
}

// BenchmarkJobOverheadCluster compares, in one run on the shared
// three-member cluster, the service's time per job through node1's unix
// socket and over HTTPS to node1's address (client certificate, pinned
// server certificate), as BenchmarkJobOverhead measures it. Jobs run one
// at a time, on any member. Run it with
//
//	go test ./internal/e2e -run '^$' -bench JobOverheadCluster -benchtime 10x
func BenchmarkJobOverheadCluster(b *testing.B) {
	n := max(b.N, 3)
	tc := sharedCluster(b)
	sock := newEnv(b, options{maxInstances: 1, lxdSocket: tc.member("node1").socket(), image: tc.image})
	_, _, overSocket := serviceTimes(b, sock, n)
	https := newEnv(b, options{maxInstances: 1, lxdSocket: tc.member("node1").socket(), image: tc.image, lxdYAML: tc.serviceLXD()})
	_, _, overHTTPS := serviceTimes(b, https, n)
	ms, mh := median(overSocket), median(overHTTPS)
	b.ReportMetric(float64(ms.Milliseconds()), "socket-ms/job")
	b.ReportMetric(float64(mh.Milliseconds()), "https-ms/job")
	b.ReportMetric(100*(float64(mh)/float64(ms)-1), "https-vs-socket-%")
	b.Logf("%d jobs each: unix socket %v, HTTPS %v per job (%+.1f%%)", n, ms, mh, 100*(float64(mh)/float64(ms)-1))
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}
