package scheduler

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/store"
)

// These tests run the scheduler against a real SQLite store, an in-memory
// LXD, an in-memory GitHub and a fake clock. The end-to-end tests run the
// same against the real LXD daemon and the GitHub stand-in over HTTP.

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type memLXD struct {
	mu        sync.Mutex
	instances map[string]Instance
	specs     map[string]InstanceSpec
	creates   int
	peak      int
	failNext  int
	block     chan struct{} // when set, Create waits for it or ctx
	// away makes every call fail with ErrUnreachable, as while the LXD
	// daemon is down. The first Create that meets it leaves behind an
	// instance in state halfMade ("Stopped", "Running"; none when empty),
	// as a daemon killed in the middle of a create may.
	away     bool
	halfMade string
}

var errAway = fmt.Errorf("dial unix /var/lib/lxd/unix.socket: %w", ErrUnreachable)

func (m *memLXD) setAway(away bool) { m.mu.Lock(); m.away = away; m.mu.Unlock() }

func (m *memLXD) Get(_ context.Context, name string) (Instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.away {
		return Instance{}, errAway
	}
	in, ok := m.instances[name]
	if !ok {
		return Instance{}, ErrNotFound
	}
	return in, nil
}

func (m *memLXD) Create(ctx context.Context, spec InstanceSpec) error {
	if m.block != nil {
		select {
		case <-m.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.away {
		if m.halfMade != "" {
			m.instances[spec.Name] = Instance{Name: spec.Name, Owner: spec.Config[KeyOwner], Pool: spec.Config[KeyPool], Status: m.halfMade}
			m.specs[spec.Name] = spec
			m.halfMade = ""
		}
		return errAway
	}
	if m.failNext > 0 {
		m.failNext--
		return errors.New("lxd: injected failure")
	}
	if _, ok := m.instances[spec.Name]; ok {
		return fmt.Errorf("instance %s exists", spec.Name)
	}
	m.creates++
	m.instances[spec.Name] = Instance{Name: spec.Name, Owner: spec.Config[KeyOwner], Pool: spec.Config[KeyPool], Status: "Running",
		RunnerID: parseInt(spec.Config[KeyRunnerID]), Org: spec.Config[KeyOrg], InstallID: parseInt(spec.Config[KeyInstall])}
	m.specs[spec.Name] = spec
	m.peak = max(m.peak, len(m.instances))
	return nil
}

func (m *memLXD) Delete(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.away {
		return errAway
	}
	delete(m.instances, name)
	return nil
}

func (m *memLXD) List(context.Context) ([]Instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.away {
		return nil, errAway
	}
	var out []Instance
	for _, in := range m.instances {
		out = append(out, in)
	}
	return out, nil
}

func (m *memLXD) count() int { m.mu.Lock(); defer m.mu.Unlock(); return len(m.instances) }

type memRunner struct {
	name         string
	online, busy bool
}

type memGitHub struct {
	mu       sync.Mutex
	next     int64
	runners  map[int64]*memRunner
	jitCalls int
	removes  int
	failJIT  int
	// busyOnCreate marks every new runner busy, as if it took a job at once.
	busyOnCreate bool
}

func (g *memGitHub) GenerateJITConfig(_ context.Context, req JITRequest) (JITRunner, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.jitCalls++
	if g.failJIT > 0 {
		g.failJIT--
		return JITRunner{}, errors.New("github: 503")
	}
	for _, r := range g.runners {
		if r.name == req.Name {
			return JITRunner{}, errors.New("409 already exists")
		}
	}
	g.next++
	g.runners[g.next] = &memRunner{name: req.Name, online: g.busyOnCreate, busy: g.busyOnCreate}
	return JITRunner{RunnerID: g.next, Config: Secret("JITSECRET-" + req.Name)}, nil
}

func (g *memGitHub) Runner(_ context.Context, _ int64, _ string, id int64) (RunnerStatus, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	r, ok := g.runners[id]
	if !ok {
		return RunnerStatus{}, ErrNotFound
	}
	return RunnerStatus{ID: id, Name: r.name, Online: r.online, Busy: r.busy}, nil
}

func (g *memGitHub) RemoveRunner(_ context.Context, _ int64, _ string, id int64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	r, ok := g.runners[id]
	if !ok {
		return nil
	}
	if r.busy {
		return ErrRunnerBusy
	}
	g.removes++
	delete(g.runners, id)
	return nil
}

func (g *memGitHub) ListRunners(context.Context, int64, string) ([]RunnerStatus, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []RunnerStatus
	for id, r := range g.runners {
		out = append(out, RunnerStatus{ID: id, Name: r.name, Online: r.online, Busy: r.busy})
	}
	return out, nil
}

func (g *memGitHub) set(name string, fn func(*memRunner)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, r := range g.runners {
		if r.name == name {
			fn(r)
		}
	}
}

type env struct {
	t     *testing.T
	st    *store.Store
	lxd   *memLXD
	gh    *memGitHub
	clock *fakeClock
	s     *Scheduler
	logs  *syncBuffer
	seq   int
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	st, err := store.Open(context.Background(), t.TempDir(), store.Options{Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{
		t: t, st: st,
		lxd:   &memLXD{instances: map[string]Instance{}, specs: map[string]InstanceSpec{}},
		gh:    &memGitHub{runners: map[int64]*memRunner{}},
		clock: &fakeClock{t: t0},
		logs:  &syncBuffer{},
	}
	e.s, err = New(cfg, st, e.lxd, e.gh, e.clock, zerolog.New(e.logs))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// deliver records a delivery as the webhook handler would.
func (e *env) deliver(action string, jobID int64, runner string, labels ...string) {
	e.t.Helper()
	if labels == nil {
		labels = []string{"self-hosted", "linux", "x64"}
	}
	e.seq++
	_, err := e.st.Record(context.Background(), store.Delivery{
		DeliveryID: fmt.Sprintf("d-%d", e.seq), Action: action, JobID: jobID, InstallationID: 1, Org: "acme",
		Repo: "acme/app", Labels: labels, RunnerName: runner, ReceivedAt: e.clock.Now(),
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// settle runs steps until no worker is left in flight.
func (e *env) settle() {
	e.t.Helper()
	for i := 0; i < 5; i++ {
		if err := e.s.Step(context.Background()); err != nil {
			e.t.Fatal(err)
		}
		e.s.wg.Wait()
	}
}

func (e *env) runnersIn(state string) []store.Runner {
	e.t.Helper()
	rs, err := e.st.Runners(context.Background(), 10000)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []store.Runner
	for _, r := range rs {
		if state == "" || r.State == state {
			out = append(out, r)
		}
	}
	return out
}

// startRunners queues jobs 1..n and returns the n runners started for them.
func (e *env) startRunners(n int) []store.Runner {
	e.t.Helper()
	for i := 1; i <= n; i++ {
		e.deliver(ActionQueued, int64(i), "")
	}
	e.settle()
	rs := e.runnersIn(store.RunnerStarted)
	if len(rs) != n {
		e.t.Fatalf("started runners = %d, want %d", len(rs), n)
	}
	return rs
}

// read returns what get reads from the state, failing the test on error.
func read[T any](e *env, get func(*store.Tx) (T, error)) T {
	e.t.Helper()
	var v T
	err := e.st.View(context.Background(), func(tx *store.Tx) error {
		var err error
		v, err = get(tx)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

func (e *env) job(id int64) store.Job {
	e.t.Helper()
	return read(e, func(tx *store.Tx) (store.Job, error) { return tx.Job(id) })
}

func (e *env) runner(name string) store.Runner {
	e.t.Helper()
	return read(e, func(tx *store.Tx) (store.Runner, error) { return tx.Runner(name) })
}

// timeline returns the kinds of a job's timeline steps, space-separated,
// and fails if the steps are out of time order.
func (e *env) timeline(jobID int64) string {
	e.t.Helper()
	evs, err := e.st.JobEvents(context.Background(), jobID)
	if err != nil {
		e.t.Fatal(err)
	}
	var kinds []string
	for i, ev := range evs {
		kinds = append(kinds, ev.Kind)
		if i > 0 && ev.At.Before(evs[i-1].At) {
			e.t.Fatalf("job %d: steps out of time order: %+v", jobID, evs)
		}
	}
	return strings.Join(kinds, " ")
}

func (e *env) noSecretInLogs() {
	e.t.Helper()
	if strings.Contains(e.logs.String(), "JITSECRET") {
		e.t.Fatal("a JIT config reached the logs")
	}
}

func TestManyJobsFewSlots(t *testing.T) {
	cfg := testConfig()
	e := newEnv(t, cfg)
	const jobs = 30
	for i := 1; i <= jobs; i++ {
		e.deliver(ActionQueued, int64(i), "")
	}
	nextJob := int64(1)
	for round := 0; round < 100 && nextJob <= jobs+1; round++ {
		e.settle()
		if n := e.lxd.count(); n > cfg.MaxInstances {
			t.Fatalf("%d instances at once, limit %d", n, cfg.MaxInstances)
		}
		// GitHub gives the oldest queued jobs to the started runners, in
		// whatever order it likes; then the jobs complete.
		started := e.runnersIn(store.RunnerStarted)
		var took []string
		for _, r := range started {
			if nextJob > jobs {
				break
			}
			e.deliver(ActionInProgress, nextJob, r.Name)
			took = append(took, r.Name)
			nextJob++
		}
		e.settle()
		for i, name := range took {
			e.deliver(ActionCompleted, nextJob-int64(len(took))+int64(i), name)
		}
		if len(took) == 0 && nextJob > jobs {
			break
		}
	}
	e.settle()
	if e.lxd.creates != jobs {
		t.Fatalf("launches = %d, want %d", e.lxd.creates, jobs)
	}
	if e.lxd.count() != 0 {
		t.Fatalf("%d instances left", e.lxd.count())
	}
	if e.lxd.peak > cfg.MaxInstances {
		t.Fatalf("peak %d instances, limit %d", e.lxd.peak, cfg.MaxInstances)
	}
	for i := int64(1); i <= jobs; i++ {
		if j := e.job(i); j.State != store.JobCompleted {
			t.Fatalf("job %d is %s", i, j.State)
		}
	}
	e.noSecretInLogs()
}

func TestDuplicateQueuedLaunchesOnce(t *testing.T) {
	e := newEnv(t, testConfig())
	for i := 0; i < 5; i++ {
		e.deliver(ActionQueued, 7, "") // five deliveries of one job
		e.settle()
	}
	if e.lxd.creates != 1 {
		t.Fatalf("launches = %d, want 1", e.lxd.creates)
	}
	// After the job completes, a late queued delivery must not relaunch.
	r := e.runnersIn(store.RunnerStarted)[0]
	e.deliver(ActionInProgress, 7, r.Name)
	e.deliver(ActionCompleted, 7, r.Name)
	e.settle()
	e.deliver(ActionQueued, 7, "")
	e.settle()
	if e.lxd.creates != 1 || e.lxd.count() != 0 {
		t.Fatalf("launches = %d, instances = %d; want 1, 0", e.lxd.creates, e.lxd.count())
	}
}

func TestRunnerTakesAnotherJob(t *testing.T) {
	e := newEnv(t, testConfig())
	rs := e.startRunners(2)
	// The runner launched for job 1 runs job 2, and the other way round.
	byJob := map[int64]string{rs[0].JobID: rs[0].Name, rs[1].JobID: rs[1].Name}
	e.deliver(ActionInProgress, 2, byJob[1])
	e.settle()
	if e.lxd.creates != 2 {
		t.Fatalf("launches = %d, want 2: job 1 is still covered by the other runner", e.lxd.creates)
	}
	e.deliver(ActionInProgress, 1, byJob[2])
	e.deliver(ActionCompleted, 2, byJob[1])
	e.deliver(ActionCompleted, 1, byJob[2])
	e.settle()
	if e.lxd.creates != 2 || e.lxd.count() != 0 {
		t.Fatalf("launches = %d, instances = %d", e.lxd.creates, e.lxd.count())
	}
}

func TestJobTakenByForeignRunnerLeavesSurplus(t *testing.T) {
	e := newEnv(t, testConfig())
	e.deliver(ActionQueued, 1, "")
	e.settle()
	e.deliver(ActionInProgress, 1, "someone-elses-runner")
	e.settle()
	if e.lxd.count() != 0 || e.gh.removes != 1 {
		t.Fatalf("surplus runner: instances = %d, records removed = %d; want 0, 1", e.lxd.count(), e.gh.removes)
	}
}

func TestCancelledQueuedJob(t *testing.T) {
	e := newEnv(t, testConfig())
	e.deliver(ActionQueued, 1, "")
	e.deliver(ActionQueued, 2, "")
	e.settle()
	e.deliver(ActionCompleted, 1, "") // cancelled while queued
	e.settle()
	if e.lxd.count() != 1 {
		t.Fatalf("instances = %d, want 1 (one runner for job 2)", e.lxd.count())
	}
	if e.gh.removes != 1 {
		t.Fatalf("GitHub records removed = %d, want 1", e.gh.removes)
	}
	if j := e.job(1); j.State != store.JobCompleted {
		t.Fatalf("job 1 is %s", j.State)
	}
}

func TestSurplusRunnerThatTookAJobIsKept(t *testing.T) {
	e := newEnv(t, testConfig())
	e.deliver(ActionQueued, 1, "")
	e.settle()
	r := e.runnersIn(store.RunnerStarted)[0]
	// GitHub gave the runner a job; its in_progress event is not here yet,
	// and the queued job is cancelled meanwhile, so the runner looks surplus.
	e.gh.set(r.Name, func(m *memRunner) { m.online, m.busy = true, true })
	e.deliver(ActionCompleted, 1, "")
	e.settle()
	if e.lxd.count() != 1 {
		t.Fatal("a runner running a job was deleted")
	}
	if got := e.runnersIn(store.RunnerBusy); len(got) != 1 {
		t.Fatalf("runner should be busy, runners: %+v", e.runnersIn(""))
	}
	// Its in_progress then arrives, then completed: deleted as usual.
	e.deliver(ActionInProgress, 99, r.Name)
	e.deliver(ActionCompleted, 99, r.Name)
	e.settle()
	if e.lxd.count() != 0 {
		t.Fatal("instance left after its job completed")
	}
}

func TestInProgressDuringSurplusCheckKeepsRunner(t *testing.T) {
	e := newEnv(t, testConfig())
	e.deliver(ActionQueued, 1, "")
	e.settle()
	r := e.runnersIn(store.RunnerStarted)[0]
	// Put it in the middle of a surplus teardown, then the in_progress event
	// arrives before the worker deletes the instance.
	err := e.st.Update(context.Background(), func(tx *store.Tx) error {
		x, _ := tx.Runner(r.Name)
		x.State, x.DeleteMode = store.RunnerDeleting, ModeSurplus
		return tx.PutRunner(x)
	})
	if err != nil {
		t.Fatal(err)
	}
	e.deliver(ActionInProgress, 1, r.Name)
	e.settle()
	if e.lxd.count() != 1 || len(e.runnersIn(store.RunnerBusy)) != 1 {
		t.Fatalf("runner claimed by in_progress was torn down: %+v", e.runnersIn(""))
	}
}

func TestRegistrationTimeout(t *testing.T) {
	e := newEnv(t, testConfig())
	e.deliver(ActionQueued, 1, "")
	e.deliver(ActionQueued, 2, "")
	e.settle()
	rs := e.runnersIn(store.RunnerStarted)
	e.gh.set(rs[0].Name, func(m *memRunner) { m.online = true }) // one came online, one never did
	e.clock.Advance(DefaultRegistrationTimeout)
	e.settle()
	if e.lxd.creates != 3 {
		t.Fatalf("launches = %d, want 3 (one replacement)", e.lxd.creates)
	}
	deleted := e.runnersIn(store.RunnerDeleted)
	if len(deleted) != 1 || deleted[0].Name != rs[1].Name || deleted[0].Reason == "" {
		t.Fatalf("deleted = %+v, want %s with a reason", deleted, rs[1].Name)
	}
	// The online one is not checked again.
	e.clock.Advance(DefaultRegistrationTimeout)
	e.settle()
	var kept bool
	for _, r := range e.runnersIn(store.RunnerStarted) {
		kept = kept || r.Name == rs[0].Name
	}
	if !kept {
		t.Fatal("the online runner was deleted")
	}
	e.noSecretInLogs()
}

func TestMaxJobDuration(t *testing.T) {
	e := newEnv(t, testConfig())
	e.deliver(ActionQueued, 1, "")
	e.settle()
	r := e.runnersIn(store.RunnerStarted)[0]
	e.deliver(ActionInProgress, 1, r.Name)
	e.settle()
	e.clock.Advance(DefaultMaxJobDuration - time.Second)
	e.settle()
	if e.lxd.count() != 1 {
		t.Fatal("deleted before max_job_duration")
	}
	e.clock.Advance(time.Second)
	e.settle()
	if e.lxd.count() != 0 {
		t.Fatal("not deleted after max_job_duration")
	}
	if d := e.runnersIn(store.RunnerDeleted); len(d) != 1 || !strings.Contains(d[0].Reason, "max_job_duration") {
		t.Fatalf("deleted = %+v", d)
	}
}

func TestLaunchFailuresRetryAndLoseNothing(t *testing.T) {
	e := newEnv(t, testConfig())
	e.lxd.failNext = 2
	e.gh.failJIT = 1
	e.deliver(ActionQueued, 1, "")
	for i := 0; i < 10 && e.lxd.creates == 0; i++ {
		e.settle()
		e.clock.Advance(DefaultMaxBackoff)
	}
	if e.lxd.creates != 1 {
		t.Fatalf("launches = %d, want 1 after retries", e.lxd.creates)
	}
	// The JIT failure made nothing; the two create failures were torn down
	// the careful way (GitHub record first).
	if failed, torn := e.runnersIn(store.RunnerFailed), e.runnersIn(store.RunnerDeleted); len(failed) != 1 || len(torn) != 2 {
		t.Fatalf("failed = %d, torn down = %d; want 1, 2", len(failed), len(torn))
	}
	// The GitHub records of the two runners whose instance failed are gone.
	e.gh.mu.Lock()
	n := len(e.gh.runners)
	e.gh.mu.Unlock()
	if n != 1 {
		t.Fatalf("GitHub runner records = %d, want 1", n)
	}
	if j := e.job(1); j.State != store.JobQueued {
		t.Fatalf("job is %s, want queued until a runner takes it", j.State)
	}
	e.noSecretInLogs()
}

func TestLaunchCarriesLabelsAndSecret(t *testing.T) {
	e := newEnv(t, testConfig())
	e.deliver(ActionQueued, 5, "", "self-hosted", "gpu")
	e.settle()
	if len(e.lxd.specs) != 1 {
		t.Fatalf("specs = %d", len(e.lxd.specs))
	}
	for name, spec := range e.lxd.specs {
		if spec.Config[KeyManaged] != "true" || spec.Config[KeyPool] != "gpu" || spec.Config[KeyJobID] != "5" ||
			spec.Config[KeyCreatedAt] == "" || spec.Config[KeyRunnerID] == "" {
			t.Fatalf("labels missing: %v", spec.Config)
		}
		if spec.JITConfig.Reveal() != "JITSECRET-"+name {
			t.Fatal("JIT config not handed to LXD")
		}
		if _, ok := spec.Config[KeyJITConfig]; ok {
			t.Fatal("JIT config must travel as a Secret, not in the plain config map")
		}
		if got := fmt.Sprintf("%v %+v %s", spec, spec, spec.JITConfig); strings.Contains(got, "JITSECRET") {
			t.Fatalf("formatting a spec shows the secret: %s", got)
		}
	}
}

func TestReconcile(t *testing.T) {
	e := newEnv(t, testConfig())
	// An instance of ours that the state does not know.
	e.lxd.instances["gha-linux-ghost"] = Instance{Name: "gha-linux-ghost", Owner: "gha-", Status: "Running"}
	// Unknown to the state but its runner is running a job: left alone.
	e.gh.runners[77] = &memRunner{name: "gha-linux-working", online: true, busy: true}
	e.lxd.instances["gha-linux-working"] = Instance{Name: "gha-linux-working", Owner: "gha-", Status: "Running",
		RunnerID: 77, Org: "acme", InstallID: 1}
	// One of another deployment sharing the LXD project: not ours to touch.
	e.lxd.instances["other-linux-1"] = Instance{Name: "other-linux-1", Owner: "other-", Status: "Running"}
	// A launch interrupted by a crash: a row in launching with no worker.
	err := e.st.Update(context.Background(), func(tx *store.Tx) error {
		return tx.PutRunner(store.Runner{Name: "gha-linux-cut", Pool: "linux", Org: "acme", State: store.RunnerLaunching, CreatedAt: t0})
	})
	if err != nil {
		t.Fatal(err)
	}
	e.lxd.instances["gha-linux-cut"] = Instance{Name: "gha-linux-cut", Owner: "gha-", Status: "Stopped"}
	// One whose instance was started before the crash: adopted, not killed.
	err = e.st.Update(context.Background(), func(tx *store.Tx) error {
		return tx.PutRunner(store.Runner{Name: "gha-linux-adopt", Pool: "linux", Org: "acme", State: store.RunnerLaunching, CreatedAt: t0})
	})
	if err != nil {
		t.Fatal(err)
	}
	e.lxd.instances["gha-linux-adopt"] = Instance{Name: "gha-linux-adopt", Owner: "gha-", Status: "Running"}
	e.deliver(ActionQueued, 1, "") // the job it was launched for, still queued
	if err := e.s.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.settle()
	_, other := e.lxd.instances["other-linux-1"]
	_, adopted := e.lxd.instances["gha-linux-adopt"]
	_, working := e.lxd.instances["gha-linux-working"]
	if !other || !adopted || !working || e.lxd.count() != 3 {
		t.Fatalf("instances left: %v, want the other deployment's, the adopted and the busy one", e.lxd.instances)
	}
	if s := e.runnersIn(store.RunnerStarted); len(s) != 1 || s[0].Name != "gha-linux-adopt" || e.lxd.creates != 0 {
		t.Fatalf("started = %+v, launches = %d; want the adopted runner to cover the job", s, e.lxd.creates)
	}
	if d := e.runnersIn(store.RunnerDeleted); len(d) != 1 {
		t.Fatalf("deleted rows = %+v", d)
	}
}

func TestShutdownCancelsStuckLaunchAfterGrace(t *testing.T) {
	cfg := testConfig()
	cfg.ShutdownGrace = 50 * time.Millisecond
	e := newEnv(t, cfg)
	e.lxd.block = make(chan struct{}) // LXD never answers
	e.deliver(ActionQueued, 1, "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.s.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for len(e.runnersIn(store.RunnerLaunching)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no launch started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the shutdown grace")
	}
	// The cut launch is to be torn down (GitHub record first) at the next
	// start; its job stays queued.
	if d := e.runnersIn(store.RunnerDeleting); len(d) != 1 || d[0].DeleteMode != ModeSurplus {
		t.Fatalf("the cut launch should await a careful teardown: %+v", e.runnersIn(""))
	}
	if j := e.job(1); j.State != store.JobQueued {
		t.Fatalf("job is %s, want still queued for the next start", j.State)
	}
	// The next start finishes the teardown and launches for the job again.
	e.lxd.block = nil
	next, err := New(cfg, e.st, e.lxd, e.gh, e.clock, zerolog.New(e.logs))
	if err != nil {
		t.Fatal(err)
	}
	e.s = next
	e.clock.Advance(DefaultMaxBackoff)
	e.settle()
	if d := e.runnersIn(store.RunnerDeleted); len(d) != 1 {
		t.Fatalf("teardown not finished after restart: %+v", e.runnersIn(""))
	}
	if e.lxd.creates != 1 || len(e.runnersIn(store.RunnerStarted)) != 1 {
		t.Fatalf("job not relaunched after restart: creates=%d", e.lxd.creates)
	}
}

func TestReconcileRemovesLeftoverRunnerRecords(t *testing.T) {
	e := newEnv(t, testConfig())
	e.deliver(ActionQueued, 1, "")
	e.settle() // one live runner of ours, so acme is a known org
	live := e.runnersIn(store.RunnerStarted)[0].Name
	e.gh.mu.Lock()
	e.gh.runners[901] = &memRunner{name: "gha-linux-leftover"}                          // ours, offline, no instance: remove
	e.gh.runners[902] = &memRunner{name: "gha-linux-working", online: true, busy: true} // busy: keep
	e.gh.runners[903] = &memRunner{name: "build-box-1"}                                 // not our prefix: keep
	e.gh.mu.Unlock()
	if err := e.s.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.gh.mu.Lock()
	defer e.gh.mu.Unlock()
	names := map[string]bool{}
	for _, r := range e.gh.runners {
		names[r.name] = true
	}
	if names["gha-linux-leftover"] || !names["gha-linux-working"] || !names["build-box-1"] || !names[live] {
		t.Fatalf("records after reconcile: %v", names)
	}
}

func TestJobGivenUpAfterMaxAttempts(t *testing.T) {
	e := newEnv(t, testConfig())
	e.deliver(ActionQueued, 1, "")
	for i := 0; i < DefaultMaxAttempts; i++ {
		e.settle()
		if got := len(e.runnersIn(store.RunnerStarted)); got != 1 {
			t.Fatalf("attempt %d: started runners = %d, want 1", i+1, got)
		}
		e.clock.Advance(DefaultRegistrationTimeout) // none ever comes online
		e.settle()
	}
	if j := e.job(1); j.State != store.JobAbandoned || j.Attempts != DefaultMaxAttempts || j.Reason == "" {
		t.Fatalf("job = %+v, want abandoned after %d attempts", j, DefaultMaxAttempts)
	}
	if e.lxd.creates != DefaultMaxAttempts || e.lxd.count() != 0 {
		t.Fatalf("launches = %d, instances = %d", e.lxd.creates, e.lxd.count())
	}
	if !strings.Contains(e.logs.String(), "job given up") {
		t.Fatal("no log line says the job was given up")
	}
}

func parseInt(s string) int64 {
	var v int64
	fmt.Sscan(s, &v)
	return v
}

func TestJobTimeline(t *testing.T) {
	e := newEnv(t, testConfig())
	e.deliver(ActionQueued, 1, "")
	e.settle()
	r := e.runnersIn(store.RunnerStarted)[0]
	e.clock.Advance(time.Second)
	e.deliver(ActionInProgress, 1, r.Name)
	e.clock.Advance(time.Second)
	e.deliver(ActionCompleted, 1, r.Name)
	e.settle()
	want := "queued accepted launched runner_started runner_online in_progress completed instance_deleted"
	if got := e.timeline(1); got != want {
		t.Fatalf("timeline = %s\nwant       %s", got, want)
	}
	// An ignored job says why.
	e.deliver(ActionQueued, 2, "", "ubuntu-latest")
	e.settle()
	evs, _ := e.st.JobEvents(context.Background(), 2)
	if len(evs) != 2 || evs[1].Kind != "ignored" || evs[1].Detail != ReasonNoPool {
		t.Fatalf("ignored job timeline = %+v", evs)
	}
}

// A create whose answer was lost while the runner started and took a job
// (an LXD restart mid-start): the runner is kept, not killed.
func TestFailedCreateWhoseRunnerHoldsAJobIsKept(t *testing.T) {
	e := newEnv(t, testConfig())
	e.lxd.failNext = 1
	e.gh.busyOnCreate = true // GitHub says the runner took a job at once
	e.deliver(ActionQueued, 1, "")
	e.settle()
	if busy := e.runnersIn(store.RunnerBusy); len(busy) != 1 {
		t.Fatalf("the runner GitHub says is busy should be kept as busy: %+v", e.runnersIn(""))
	}
	if e.gh.removes != 0 {
		t.Fatal("the busy runner's record was removed")
	}
}

func TestRecycleIdleAfterImageRebuild(t *testing.T) {
	cfg := testConfig()
	cfg.Pools[0].MinIdle = 2
	e := newEnv(t, cfg)
	e.deliver(ActionQueued, 1, "") // the org becomes known; its job runs on one runner
	e.settle()
	r := e.runnersIn(store.RunnerStarted)
	e.deliver(ActionInProgress, 1, r[0].Name)
	e.settle()
	if got := len(e.runnersIn(store.RunnerStarted)); got != 2 {
		t.Fatalf("idle runners = %d, want min_idle 2", got)
	}
	old := e.runnersIn(store.RunnerStarted)
	e.clock.Advance(time.Minute)
	if err := e.s.RecycleIdle(context.Background(), "img", e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	e.settle()
	idle := e.runnersIn(store.RunnerStarted)
	if len(idle) != 2 || len(e.runnersIn(store.RunnerBusy)) != 1 {
		t.Fatalf("after recycling: idle %d, busy %d; want 2 new idle and the busy one kept", len(idle), len(e.runnersIn(store.RunnerBusy)))
	}
	for _, n := range idle {
		for _, o := range old {
			if n.Name == o.Name {
				t.Fatalf("idle runner %s on the old image was kept", n.Name)
			}
		}
	}
}

// LXD goes away during a create. The launch keeps its JIT config (a single
// registration per job) and, once LXD answers again, creates the instance
// if nothing was made, replaces one that was made but does not run, and
// adopts one that runs.
func TestCreateWaitsOutLXDAndKeepsRegistration(t *testing.T) {
	for _, c := range []struct {
		halfMade string
		creates  int
	}{
		{halfMade: "", creates: 1},
		{halfMade: "Stopped", creates: 1},
		{halfMade: "Running", creates: 0},
	} {
		t.Run("left "+cmp.Or(c.halfMade, "nothing"), func(t *testing.T) {
			cfg := testConfig()
			cfg.MaxBackoff = 20 * time.Millisecond
			e := newEnv(t, cfg)
			e.lxd.away, e.lxd.halfMade = true, c.halfMade
			e.deliver(ActionQueued, 1, "")
			if err := e.s.Step(context.Background()); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond) // a few rounds of asking LXD
			e.lxd.setAway(false)
			e.settle()

			if e.gh.jitCalls != 1 {
				t.Fatalf("JIT configs = %d, want 1: the registration must outlive LXD's absence", e.gh.jitCalls)
			}
			if e.lxd.creates != c.creates {
				t.Fatalf("creates after LXD came back = %d, want %d", e.lxd.creates, c.creates)
			}
			rs := e.runnersIn("")
			if len(rs) != 1 || rs[0].State != store.RunnerStarted {
				t.Fatalf("runners = %+v, want one started", rs)
			}
			if in, err := e.lxd.Get(context.Background(), rs[0].Name); err != nil || in.Status != "Running" {
				t.Fatalf("instance = %+v, %v; want it running", in, err)
			}
			if got, want := e.timeline(1), "queued accepted launched launch_waiting runner_started"; got != want {
				t.Fatalf("timeline = %s, want %s", got, want)
			}
			e.noSecretInLogs()
		})
	}
}

// A launch that waits for LXD gives up when the service stops: its
// registration is removed and the job stays queued for the next start.
func TestCreateWaitingForLXDEndsAtShutdown(t *testing.T) {
	cfg := testConfig()
	cfg.MaxBackoff = 20 * time.Millisecond
	e := newEnv(t, cfg)
	e.lxd.away = true
	e.deliver(ActionQueued, 1, "")
	if err := e.s.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	e.s.stopWork()
	e.s.wg.Wait()
	e.lxd.setAway(false)
	e.settle()
	if j := e.job(1); j.State != store.JobQueued {
		t.Fatalf("job is %s, want queued", j.State)
	}
	e.gh.mu.Lock()
	defer e.gh.mu.Unlock()
	if e.gh.removes != 1 {
		t.Fatalf("registrations removed = %d, want 1", e.gh.removes)
	}
}

type readyMetrics struct {
	nopMetrics
	mu    sync.Mutex
	ready []time.Duration
}

func (m *readyMetrics) RunnerReady(_ string, d time.Duration) {
	m.mu.Lock()
	m.ready = append(m.ready, d)
	m.mu.Unlock()
}

// A runner that GitHub lists online gets its timeline step and one
// readiness observation when the online check sees it; taking a job later
// adds neither again. A runner GitHub does not list online gets nothing.
func TestOnlineCheck(t *testing.T) {
	e := newEnv(t, testConfig())
	m := &readyMetrics{}
	e.s.SetMetrics(m)
	ctx := context.Background()
	rs := e.startRunners(2)
	e.clock.Advance(3 * time.Second)
	e.s.checkOnline(ctx)
	if len(m.ready) != 0 {
		t.Fatal("a runner GitHub lists offline was counted ready")
	}
	e.gh.set(rs[0].Name, func(r *memRunner) { r.online = true })
	e.s.checkOnline(ctx)
	e.s.checkOnline(ctx)
	if len(m.ready) != 1 || m.ready[0] != 3*time.Second {
		t.Fatalf("readiness observed %v, want once, 3s", m.ready)
	}
	for _, r := range e.runnersIn(store.RunnerStarted) {
		if online := !r.OnlineAt.IsZero(); online != (r.Name == rs[0].Name) {
			t.Errorf("%s: online = %v", r.Name, online)
		}
	}

	e.clock.Advance(time.Second)
	e.deliver(ActionInProgress, rs[0].JobID, rs[0].Name)
	e.deliver(ActionInProgress, rs[1].JobID, rs[1].Name)
	e.settle()
	if len(m.ready) != 2 || m.ready[1] != 4*time.Second {
		t.Fatalf("readiness observed %v, want a second one of 4s for the runner seen first by in_progress", m.ready)
	}
	for _, r := range rs {
		evs, err := e.st.JobEvents(ctx, r.JobID)
		if err != nil {
			t.Fatal(err)
		}
		var online []string
		for _, ev := range evs {
			if ev.Kind == "runner_online" {
				online = append(online, ev.Detail)
			}
		}
		want := r.Name + ": took a job"
		if r.Name == rs[0].Name {
			want = r.Name + ": online at GitHub"
		}
		if len(online) != 1 || online[0] != want {
			t.Errorf("job %d: runner_online steps %q, want [%q]", r.JobID, online, want)
		}
	}
}

// An idle runner that was online and that GitHub now lists offline (its
// runner process hung, its instance still runs) is replaced at reconcile:
// counted as unassigned, it would keep the queued job waiting. A runner
// never seen online is left to the registration timer.
func TestReconcileReplacesRunnerThatWentOffline(t *testing.T) {
	e := newEnv(t, testConfig())
	ctx := context.Background()
	rs := e.startRunners(2)
	seen, never := rs[0], rs[1]
	e.gh.set(seen.Name, func(r *memRunner) { r.online = true })
	e.s.checkOnline(ctx)
	e.gh.set(seen.Name, func(r *memRunner) { r.online = false })

	if err := e.s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	e.settle()
	if r := e.runner(seen.Name); r.State != store.RunnerDeleted {
		t.Fatalf("runner that went offline: %+v; want deleted", r)
	}
	if r := e.runner(never.Name); r.State != store.RunnerStarted {
		t.Fatalf("runner never seen online: %+v; want it left started", r)
	}
	if _, err := e.lxd.Get(ctx, seen.Name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the offline runner's instance is still there: %v", err)
	}
	if e.gh.jitCalls != 3 || len(e.runnersIn(store.RunnerStarted)) != 2 {
		t.Fatalf("JIT configs = %d, started = %d; want a replacement (3, 2)", e.gh.jitCalls, len(e.runnersIn(store.RunnerStarted)))
	}
	if !strings.Contains(e.timeline(seen.JobID), "teardown") {
		t.Fatalf("job %d's timeline does not say why its runner went: %s", seen.JobID, e.timeline(seen.JobID))
	}
}
