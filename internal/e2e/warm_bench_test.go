package e2e

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/devimage"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghapp"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
)

// largeImageMB is the filler of the large image: a runner image with a
// toolset is a few hundred MB.
const largeImageMB = 400

// runnerImage is the test image's content: busybox and the fake runner.
func runnerImage(padding int64) devimage.Options {
	return devimage.Options{Binary: runnerPath, Init: []string{devimage.DefaultBinaryPath, "fake-runner"}, Padding: padding}
}

// BenchmarkStart measures queued -> job taken (the stand-in gives the job
// to a runner) for a cold launch, a prepared instance and a warm runner,
// with the small test image and one padded to a realistic size, side by
// side in one run: six services, b.N jobs each (at least 5), one at a
// time, each after the pool is back at rest. Run it with
//
//	go test ./internal/e2e -run '^$' -bench '^BenchmarkStart$' -benchtime 1x
//
// and E2E_STORAGE_POOL=NAME for another storage pool than the default
// profile's.
func BenchmarkStart(b *testing.B) {
	if setupErr != nil {
		b.Fatal(setupErr)
	}
	n := max(b.N, 5)
	c := lxdtest.Connect(b)
	began := time.Now()
	large, _ := lxdtest.Image(b, c, runnerImage(largeImageMB<<20))
	b.Logf("large image (%d MB of filler) imported in %v", largeImageMB, time.Since(began).Round(time.Millisecond))
	var lines []string
	for _, img := range []struct{ name, alias string }{{"small", imageAlias}, {"large", large}} {
		for _, mode := range []string{"cold", "prepared", "warm"} {
			pool := map[string]string{"prepared": "    prepared: 1", "warm": "    min_idle: 1"}[mode]
			e := newEnv(b, options{maxInstances: 2, image: img.alias, pool: pool})
			var taken []time.Duration
			for i := 0; i < n; i++ {
				switch mode {
				case "cold":
					e.waitNoInstances()
				case "prepared":
					e.eventually("a prepared instance ready", 2*time.Minute, func() bool {
						return strings.Count(e.logText(), `"message":"prepared instance ready"`) > i && len(e.instances()) == 1
					})
				case "warm":
					e.eventually("an idle runner", 2*time.Minute, func() bool { return e.idleRunners() == 1 && len(e.instances()) == 1 })
				}
				id := e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: 200 * time.Millisecond})
				j, err := e.fake.WaitJob(e.ctx, id, func(j ghfake.JobView) bool { return j.Status != ghfake.StatusQueued })
				if err != nil {
					b.Fatal(err)
				}
				taken = append(taken, j.StartedAt.Sub(j.CreatedAt))
				e.waitCompleted(id)
			}
			e.stop(syscall.SIGTERM)
			for _, in := range e.instances() {
				_ = c.Delete(context.Background(), in.Name)
			}
			m := median(taken)
			b.ReportMetric(float64(m.Milliseconds()), fmt.Sprintf("%s-%s-ms", mode, img.name))
			lines = append(lines, fmt.Sprintf("%-5s image, %-8s: median %4d ms  (%s)", img.name, mode, m.Milliseconds(), ms(taken)))
		}
	}
	b.Logf("queued -> job taken, %d jobs each:\n%s", n, strings.Join(lines, "\n"))
}

func ms(ds []time.Duration) string {
	var out []string
	for _, d := range ds {
		out = append(out, fmt.Sprint(d.Milliseconds()))
	}
	return strings.Join(out, " ")
}

// bare runs jobs as a perfect script would, beside e's service (which
// ignores them: their labels match no pool): a JIT config from the
// stand-in through the App's own client, `lxc launch --ephemeral` with the
// JIT config set by hand, the job, and `lxc delete -f` the moment it
// completes, until LXD has deleted the instance.
type bare struct {
	e     *env
	gh    *ghapp.Client
	image string
}

func newBare(b *testing.B, e *env, image string) *bare {
	b.Helper()
	key, err := os.ReadFile(filepath.Join(e.dir, "app.pem"))
	if err != nil {
		b.Fatal(err)
	}
	gh, err := ghapp.New(ghapp.Config{APIURL: e.fake.URL(), AppID: 4242, PrivateKey: key, JITPerMinute: 100000, JITBurst: 1000}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	return &bare{e: e, gh: gh, image: image}
}

// queue queues a job that only its own bare cycle's runner takes.
func (x *bare) queue(d time.Duration) (id int64, label string) {
	label = "bare-" + randHex(4)
	return x.e.fake.QueueJob(ghfake.JobSpec{Labels: []string{"self-hosted", label}, Repo: "acme/app", Duration: d}), label
}

// cycle runs the job queued with label on a fresh instance.
func (x *bare) cycle(b *testing.B, id int64, label string) {
	e := x.e
	name := e.prefix + label
	jit, err := x.gh.GenerateJITConfig(e.ctx, fleet.JITRequest{InstallationID: e.fake.InstallationID(), Org: "acme", Name: name,
		Labels: []string{"self-hosted", "linux", "x64", label}})
	if err != nil {
		b.Error(err)
		return
	}
	if out, err := exec.CommandContext(e.ctx, "lxc", "launch", x.image, name, "--ephemeral", "-p", "default", "-p", e.profile,
		"-c", fleet.KeyJITConfig+"="+jit.Config.Reveal()).CombinedOutput(); err != nil {
		b.Errorf("lxc launch: %v\n%s", err, strings.ReplaceAll(string(out), jit.Config.Reveal(), fleet.Redacted))
		return
	}
	if _, err := e.fake.WaitJob(e.ctx, id, func(j ghfake.JobView) bool { return j.Status == ghfake.StatusCompleted }); err != nil {
		b.Error(err)
		return
	}
	// The fake runner's init exits with its job and LXD deletes the
	// instance itself: a delete that finds it gone is fine.
	_ = exec.CommandContext(e.ctx, "lxc", "delete", "-f", name).Run()
	lxdtest.WaitGone(b, e.lxd, name, time.Minute)
}

// BenchmarkBurst: 40 jobs of 1 s queued at once on 4 slots, the
// service's wall time (first queued -> last completed, and -> every
// instance deleted) against 10 waves of 4 bare cycles, in one run. Run it
// with
//
//	go test ./internal/e2e -run '^$' -bench '^BenchmarkBurst$' -benchtime 1x
//
// BURST_JIT_LATENCY=500ms makes the stand-in take that long to answer each
// JIT config request, as GitHub does, for both.
func BenchmarkBurst(b *testing.B) {
	if setupErr != nil {
		b.Fatal(setupErr)
	}
	const jobs, slots, length = 40, 4, time.Second
	e := newEnv(b, options{maxInstances: slots})
	if v := os.Getenv("BURST_JIT_LATENCY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatal(err)
		}
		e.fake.SetLatency(jitRoute, d)
		b.Logf("JIT config requests take %v", d)
	}
	x := newBare(b, e, imageAlias)

	start := time.Now()
	for range jobs / slots {
		var wg sync.WaitGroup
		for range slots {
			id, label := x.queue(length)
			wg.Go(func() { x.cycle(b, id, label) })
		}
		wg.Wait()
	}
	bareWall := time.Since(start)

	jit0 := e.jitCalls()
	start = time.Now()
	var ids []int64
	for range jobs {
		ids = append(ids, e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: length}))
	}
	e.waitCompleted(ids...)
	done := time.Since(start)
	e.waitNoInstances()
	clear := time.Since(start)
	launches := e.jitCalls() - jit0
	b.ReportMetric(bareWall.Seconds(), "bare-s")
	b.ReportMetric(done.Seconds(), "service-s")
	b.ReportMetric(clear.Seconds(), "service-clear-s")
	b.ReportMetric(float64(launches), "launches")
	b.Logf("%d jobs of %v on %d slots: bare waves %v; service %v to the last job completed, %v to every instance deleted (%+.1f%% against bare); %d launches",
		jobs, length, slots, bareWall.Round(time.Millisecond), done.Round(time.Millisecond), clear.Round(time.Millisecond),
		100*(clear.Seconds()/bareWall.Seconds()-1), launches)
	if launches != jobs {
		b.Errorf("launches = %d, want %d", launches, jobs)
	}
}

// BenchmarkSoak: 300 jobs arriving as a Poisson process at 2.8 a second,
// each 1-5 s long, on 8 slots, the service killed with SIGKILL every 30 s
// and started again; against the bare-cycle floor, the same arrivals and
// lengths on 8 bare workers, in one run. Reported: jobs per hour (jobs /
// first queued -> last completed), queue wait (queued -> taken) p50 and
// p95, launches (JIT configs) against jobs. It takes about 8 minutes: run
// it once by hand,
//
//	go test ./internal/e2e -run '^$' -bench '^BenchmarkSoak$' -benchtime 1x -timeout 30m
//
// SOAK_JOBS changes the number of jobs; SOAK_LOG=FILE keeps the service's
// log there. Webhooks GitHub could not deliver
// while the service was down are redelivered; redeliver_interval is 5 s
// here (1 m by default).
func BenchmarkSoak(b *testing.B) {
	if setupErr != nil {
		b.Fatal(setupErr)
	}
	jobs := 300
	if v := os.Getenv("SOAK_JOBS"); v != "" {
		fmt.Sscan(v, &jobs)
	}
	const rate, slots, killEvery = 2.8, 8, 30 * time.Second
	rng := rand.New(rand.NewPCG(2026, 11))
	arrive := make([]time.Duration, jobs)
	length := make([]time.Duration, jobs)
	var at float64
	for i := range jobs {
		at += rng.ExpFloat64() / rate
		arrive[i] = time.Duration(at * float64(time.Second))
		length[i] = time.Second + time.Duration(rng.Int64N(int64(4*time.Second)))
	}
	e := newEnv(b, options{maxInstances: slots, top: "redeliver_interval: 5s", timeout: 40 * time.Minute})
	x := newBare(b, e, imageAlias)

	// The floor: the same stream on 8 bare workers.
	type item struct {
		id    int64
		label string
	}
	work := make(chan item, jobs)
	var wg sync.WaitGroup
	for range slots {
		wg.Go(func() {
			for it := range work {
				x.cycle(b, it.id, it.label)
			}
		})
	}
	start := time.Now()
	var bareIDs []int64
	for i := range jobs {
		time.Sleep(time.Until(start.Add(arrive[i])))
		id, label := x.queue(length[i])
		bareIDs = append(bareIDs, id)
		work <- item{id, label}
	}
	close(work)
	wg.Wait()
	bareStats := soakStats(e, bareIDs)

	// The service, killed every 30 s.
	jit0 := e.jitCalls()
	start = time.Now()
	nextKill := start.Add(killEvery)
	kills := 0
	var back []time.Duration // kill -> the service healthy again
	kill := func() {
		t0 := time.Now()
		e.stop(syscall.SIGKILL)
		e.start()
		back = append(back, time.Since(t0))
		kills++
		nextKill = nextKill.Add(killEvery)
	}
	var ids []int64
	for i := range jobs {
		for start.Add(arrive[i]).After(nextKill) {
			time.Sleep(time.Until(nextKill))
			kill()
		}
		time.Sleep(time.Until(start.Add(arrive[i])))
		ids = append(ids, e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app", Duration: length[i]}))
	}
	for {
		all := true
		for _, id := range ids {
			if j, _ := e.fake.Job(id); j.Status != ghfake.StatusCompleted {
				all = false
				break
			}
		}
		if all {
			break
		}
		if time.Now().After(nextKill) {
			kill()
		}
		if time.Since(start) > 30*time.Minute {
			b.Fatal("jobs not completed after 30 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
	svc := soakStats(e, ids)
	if f := os.Getenv("SOAK_LOG"); f != "" {
		if err := os.WriteFile(f, []byte(e.logText()), 0o600); err != nil {
			b.Error(err)
		}
	}
	launches := e.jitCalls() - jit0
	failed := 0
	for _, id := range ids {
		if j, _ := e.fake.Job(id); j.Conclusion != ghfake.ConclusionSuccess {
			failed++
		}
	}
	b.ReportMetric(svc.perHour, "service-jobs/h")
	b.ReportMetric(bareStats.perHour, "bare-jobs/h")
	b.ReportMetric(svc.p50.Seconds(), "service-wait-p50-s")
	b.ReportMetric(svc.p95.Seconds(), "service-wait-p95-s")
	b.ReportMetric(bareStats.p50.Seconds(), "bare-wait-p50-s")
	b.ReportMetric(bareStats.p95.Seconds(), "bare-wait-p95-s")
	b.ReportMetric(float64(launches)/float64(jobs), "launches/job")
	b.Logf("%d jobs, Poisson at %.1f/s, 1-5 s each, %d slots:\n"+
		"  bare floor: %v, %.0f jobs/h, queue wait p50 %v p95 %v\n"+
		"  service, SIGKILL every %v (%d kills, healthy again after %s ms): %v, %.0f jobs/h (%.0f%% of the floor), queue wait p50 %v p95 %v; %d launches for %d jobs; %d jobs not successful",
		jobs, rate, slots, bareStats.wall.Round(time.Second), bareStats.perHour, bareStats.p50.Round(time.Millisecond), bareStats.p95.Round(time.Millisecond),
		killEvery, kills, ms(back), svc.wall.Round(time.Second), svc.perHour, 100*svc.perHour/bareStats.perHour,
		svc.p50.Round(time.Millisecond), svc.p95.Round(time.Millisecond), launches, jobs, failed)
}

type soak struct {
	wall          time.Duration
	perHour       float64
	p50, p95, max time.Duration
}

// soakStats reads the jobs' times at the stand-in.
func soakStats(e *env, ids []int64) soak {
	var first, last time.Time
	var waits []time.Duration
	for _, id := range ids {
		j, _ := e.fake.Job(id)
		if first.IsZero() || j.CreatedAt.Before(first) {
			first = j.CreatedAt
		}
		if j.CompletedAt.After(last) {
			last = j.CompletedAt
		}
		if !j.StartedAt.IsZero() {
			waits = append(waits, j.StartedAt.Sub(j.CreatedAt))
		}
	}
	slices.Sort(waits)
	pct := func(p float64) time.Duration {
		if len(waits) == 0 {
			return 0
		}
		return waits[min(len(waits)-1, int(math.Ceil(p*float64(len(waits))))-1)]
	}
	wall := last.Sub(first)
	return soak{wall: wall, perHour: float64(len(ids)) / wall.Hours(), p50: pct(0.5), p95: pct(0.95), max: pct(1)}
}
