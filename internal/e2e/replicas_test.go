package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/ghfake"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/leader"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/store/pgtest"
)

// Three replicas on one database take 60 jobs on 6 slots, each webhook
// reaching two of them. The leader is killed (-9) in the middle of the
// burst, a follower later. Every job runs on a runner of its own; every
// JIT config and every instance beyond one per job belongs to a runner
// whose launch the kill cut short and the new leader tore down; the limit
// holds across the takeover; nothing is left behind.
func TestReplicasKillNine(t *testing.T) {
	lxdtest.Connect(t) // skips without LXD, before a database is made
	const jobs, limit = 60, 6
	e := newEnv(t, options{replicas: 3, record: true, database: pgtest.Shared(t).NewDatabase(t), maxInstances: limit,
		top: "redeliver_interval: 1s\nreconcile_interval: 2s", limits: "  registration_timeout: 20s"})
	db := e.openState()
	e.waitLeader(db)
	peak := e.peakInstances()
	var ids []int64
	for i := 0; i < jobs; i++ {
		ids = append(ids, e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app",
			Duration: time.Duration(300+rand.IntN(600)) * time.Millisecond}))
	}

	e.eventually("a fifth of the jobs done", 2*time.Minute, func() bool { return completed(e) >= jobs/5 })
	old := e.waitLeader(db)
	// Kill it in the middle of a launch: the new leader must sort out what
	// it left half made.
	e.waitCreate(old, time.Now())
	done := completed(e)
	killed := time.Now()
	e.replicas[old].stop(syscall.SIGKILL)
	next, took := e.takeover(old, killed)
	t.Logf("takeover after kill -9 of the leader (replica %d, %d jobs done): replica %d took the lead %v later",
		old, done, next, took.Round(time.Millisecond))
	// The lease runs out at most a lease time after the kill, and a
	// follower campaigns every third of one; a second for a loaded machine.
	if limit := leader.DefaultTTL + leader.DefaultTTL/3 + time.Second; took > limit {
		t.Errorf("takeover took %v, want within %v (the lease time and a campaign interval)", took, limit)
	}

	e.eventually("more than half the jobs done", 2*time.Minute, func() bool { return completed(e) > jobs/2 })
	follower := 3 - old - next // the third replica
	t.Logf("kill -9 of a follower (replica %d, %d jobs done)", follower, completed(e))
	e.replicas[follower].stop(syscall.SIGKILL)

	e.waitCompletedWithin(2*time.Minute, ids...)
	e.waitNoInstances()
	e.eventually("no runner records left", time.Minute, func() bool { return len(e.fake.Runners()) == 0 })
	e.eventually("no live runners in the state", 30*time.Second, func() bool { return liveRunners(t, db) == 0 })
	if p := peak(); p > limit {
		t.Errorf("peak instances = %d, limit %d", p, limit)
	} else {
		t.Logf("peak instances %d (limit %d)", p, limit)
	}
	if l := e.leader(db); l != next {
		t.Errorf("replica %d leads at the end, want %d: killing a follower moved the lead", l, next)
	}
	e.checkLaunches(db, ids)
	e.checkNoSecrets()
}

// The leader is stopped (SIGSTOP) in the middle of an instance create, for
// twice its lease time, then let go on (SIGCONT). A follower takes over;
// the jobs queued meanwhile run; and the old leader, whose lease lapsed
// while it was stopped, makes no LXD or GitHub call from the moment it was
// stopped to the end of the test, as its own recording proxies show.
func TestReplicasStoppedLeaderMakesNoCalls(t *testing.T) {
	lxdtest.Connect(t)
	e := newEnv(t, options{replicas: 2, record: true, database: pgtest.Shared(t).NewDatabase(t), maxInstances: 4,
		top: "redeliver_interval: 1s\nreconcile_interval: 2s", limits: "  registration_timeout: 20s"})
	db := e.openState()
	old := e.waitLeader(db)
	var ids []int64
	queue := func(n int) {
		for i := 0; i < n; i++ {
			ids = append(ids, e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app",
				Duration: time.Duration(1000+rand.IntN(1000)) * time.Millisecond}))
		}
	}
	queued := time.Now()
	queue(8)
	// What a stopped leader does when it wakes with a call in flight is
	// the point: stop it while it creates an instance.
	e.waitCreate(old, queued)
	stopped := e.replicas[old].pause()
	queue(6) // while the leader is stopped
	time.Sleep(time.Until(stopped.Add(2 * leader.DefaultTTL)))
	e.replicas[old].resume()
	resumed := time.Now()
	next, took := e.takeover(old, stopped)
	t.Logf("takeover after SIGSTOP of the leader (replica %d): replica %d took the lead %v later (SIGCONT after %v)",
		old, next, took.Round(time.Millisecond), resumed.Sub(stopped).Round(time.Millisecond))
	if took > resumed.Sub(stopped) {
		t.Errorf("replica %d took the lead only after the old leader woke", next)
	}

	e.waitCompletedWithin(time.Minute, ids...)
	e.waitNoInstances()
	e.eventually("no runner records left", time.Minute, func() bool { return len(e.fake.Runners()) == 0 })
	e.replicas[old].waitLog("lost the lead")
	e.checkLaunches(db, ids)
	// A request the process had written before it stopped may reach its
	// proxy a moment later; after that, nothing.
	quiet := stopped.Add(100 * time.Millisecond)
	var before, after int
	for _, c := range e.calls.all() {
		switch {
		case c.replica != old:
		case c.at.Before(quiet):
			before++
		default:
			after++
			t.Errorf("the stopped leader called out after it was stopped: %s", c)
		}
	}
	t.Logf("the old leader made %d calls before it was stopped and %d after", before, after)
	if l := e.leader(db); l != next {
		t.Errorf("replica %d leads at the end, want %d", l, next)
	}
}

// PostgreSQL (a cluster of the test's own) is unreachable for 10 s in the
// middle of a burst. Every webhook a replica answered 202 is in the
// deliveries table; none was answered 2xx while the database was away
// (they were answered 503, and GitHub lists them as failed); the leader's
// redeliverer then has them sent again, and every job runs, none twice.
func TestReplicasDatabaseOutage(t *testing.T) {
	lxdtest.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	pg, err := pgtest.Start(ctx)
	if errors.Is(err, pgtest.ErrUnavailable) {
		fleettest.Missing(t, "PostgreSQL tests skipped: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Remove)
	e := newEnv(t, options{replicas: 2, record: true, database: pg.NewDatabase(t), maxInstances: 4,
		top: "redeliver_interval: 1s\nreconcile_interval: 2s", limits: "  registration_timeout: 30s"})
	db := e.openState()
	e.waitLeader(db)
	var ids []int64
	queue := func(n int) {
		for i := 0; i < n; i++ {
			ids = append(ids, e.fake.QueueJob(ghfake.JobSpec{Labels: selfHosted, Repo: "acme/app",
				Duration: time.Duration(2000+rand.IntN(1000)) * time.Millisecond}))
		}
	}
	queue(16)
	// Jobs running when the database goes away: their webhooks come in
	// the window.
	e.eventually("jobs running", 2*time.Minute, func() bool { return inProgress(e) >= 3 })

	t.Logf("stopping PostgreSQL (%d jobs done, %d running)", completed(e), inProgress(e))
	if err := pg.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	for i := 0; i < 4; i++ { // queued while the database is away
		time.Sleep(2 * time.Second)
		queue(1)
	}
	time.Sleep(time.Until(down.Add(10 * time.Second)))
	up := time.Now()
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("PostgreSQL back after %v", time.Since(down).Round(time.Millisecond))

	// Checked at once, before the jobs are waited for: a delivery answered
	// 2xx but not stored would leave its job waiting for good.
	// A commit that went through just before the database stopped may be
	// answered a moment after pg_ctl returned: the window starts 1 s later.
	from := down.Add(time.Second)
	var refused, accepted int
	for _, a := range e.hooks.all() {
		if a.at.Before(from) || a.at.After(up) {
			continue
		}
		switch {
		case a.ok():
			accepted++
			t.Errorf("replica %d answered %d to delivery %s while the database was away", a.replica, a.status, a.guid)
		case a.status == http.StatusServiceUnavailable:
			refused++
		}
	}
	if refused == 0 {
		t.Error("no webhook was answered 503 while the database was away: the outage was not tested")
	}
	e.checkStored(db)
	if t.Failed() {
		t.FailNow()
	}

	e.waitCompletedWithin(90*time.Second, ids...)
	e.waitNoInstances()
	e.eventually("no runner records left", time.Minute, func() bool { return len(e.fake.Runners()) == 0 })
	answered := e.checkStored(db)
	var failed, redelivered int
	for _, d := range e.fake.Deliveries() {
		if d.Failed {
			failed++
		}
		if d.Redelivery {
			redelivered++
		}
	}
	t.Logf("while the database was away: %d answers 503, %d 2xx; overall %d 2xx answers, all stored; "+
		"GitHub listed %d deliveries failed and made %d redeliveries", refused, accepted, answered, failed, redelivered)
	e.checkLaunches(db, ids)
}

// checkStored checks that every delivery a replica answered 2xx so far is
// in the deliveries table, and returns how many such answers there were.
func (e *env) checkStored(db *sql.DB) int {
	t := e.t
	t.Helper()
	stored := map[string]bool{}
	rows, err := db.QueryContext(e.ctx, `SELECT delivery_id FROM deliveries`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		stored[id] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	answered := 0
	for _, a := range e.hooks.all() {
		if a.ok() && a.guid != "" {
			answered++
			if !stored[a.guid] {
				t.Errorf("delivery %s was answered %d by replica %d but is not in the deliveries table", a.guid, a.status, a.replica)
			}
		}
	}
	return answered
}

// waitCompletedWithin waits for the jobs to complete, for d at most.
func (e *env) waitCompletedWithin(d time.Duration, ids ...int64) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, d)
	defer cancel()
	for _, id := range ids {
		_, err := e.fake.WaitJob(ctx, id, func(j ghfake.JobView) bool { return j.Status == ghfake.StatusCompleted })
		if err != nil {
			e.t.Fatalf("job %d did not complete within %v: %v (%d of %d jobs completed)", id, d, err, completed(e), len(ids))
		}
	}
}

func inProgress(e *env) int {
	n := 0
	for _, j := range e.fake.Jobs() {
		if j.Status == ghfake.StatusInProgress {
			n++
		}
	}
	return n
}

// openState opens the test's PostgreSQL state database.
func (e *env) openState() *sql.DB {
	e.t.Helper()
	db, err := sql.Open("pgx", e.database)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { db.Close() })
	return db
}

// logLine is what the tests read of the service's JSON log lines.
type logLine struct {
	Time    time.Time `json:"time"`
	Message string    `json:"message"`
	Replica string    `json:"replica"`
}

// lines returns the replica's log lines with message msg, oldest first.
func (r *replica) lines(msg string) []logLine {
	var out []logLine
	for _, s := range strings.Split(r.logText(), "\n") {
		if !strings.Contains(s, `"message":"`+msg+`"`) {
			continue
		}
		var l logLine
		if json.Unmarshal([]byte(s), &l) == nil && l.Message == msg {
			out = append(out, l)
		}
	}
	return out
}

// holder is the replica's name in the lease, as its last start logged it.
func (r *replica) holder() string {
	ls := r.lines("starting")
	if len(ls) == 0 {
		return ""
	}
	return ls[len(ls)-1].Replica
}

// waitLog waits for a log line of this replica holding want.
func (r *replica) waitLog(want string) {
	r.e.t.Helper()
	r.e.eventually(fmt.Sprintf("a log line of replica %d with %q", r.n, want), 30*time.Second, func() bool {
		return strings.Contains(r.logText(), want)
	})
}

// leader returns the replica that holds a valid lease now, or -1.
func (e *env) leader(db *sql.DB) int {
	e.t.Helper()
	var holder string
	var valid bool
	err := db.QueryRowContext(e.ctx, `SELECT holder, expires_at > clock_timestamp() FROM leader_lease WHERE id = 1`).Scan(&holder, &valid)
	if err != nil || !valid {
		return -1
	}
	for _, r := range e.replicas {
		if r.holder() == holder {
			return r.n
		}
	}
	return -1
}

// waitLeader waits until a replica leads and returns it.
func (e *env) waitLeader(db *sql.DB) int {
	e.t.Helper()
	n := -1
	e.eventually("a replica leading", 30*time.Second, func() bool { n = e.leader(db); return n >= 0 })
	return n
}

// takeover waits for a replica other than from to take the lead after
// since, and says which and how long after since it did, by its log.
func (e *env) takeover(from int, since time.Time) (int, time.Duration) {
	e.t.Helper()
	to, at := -1, time.Time{}
	e.eventually("another replica taking the lead", 30*time.Second, func() bool {
		for _, r := range e.replicas {
			if r.n == from {
				continue
			}
			for _, l := range r.lines("took the lead") {
				if l.Time.After(since) && (to < 0 || l.Time.Before(at)) {
					to, at = r.n, l.Time
				}
			}
		}
		return to >= 0
	})
	return to, at.Sub(since)
}

// waitCreate waits until replica n asks LXD to create an instance, after
// since. It polls often: a create takes about a second.
func (e *env) waitCreate(n int, since time.Time) {
	e.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		for _, c := range e.calls.all() {
			if c.replica == n && c.to == "lxd" && c.name != "" && c.at.After(since) {
				return
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("replica %d created no instance within a minute", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pause stops the replica's process (SIGSTOP) and returns once the kernel
// shows every thread of it stopped.
func (r *replica) pause() time.Time {
	e := r.e
	e.t.Helper()
	r.mu.Lock()
	cmd := r.cmd
	r.mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		e.t.Fatal(err)
	}
	tasks := fmt.Sprintf("/proc/%d/task", cmd.Process.Pid)
	var at time.Time
	e.eventually(fmt.Sprintf("replica %d stopped", r.n), 10*time.Second, func() bool {
		ents, err := os.ReadDir(tasks)
		if err != nil {
			return false
		}
		for _, ent := range ents {
			b, err := os.ReadFile(filepath.Join(tasks, ent.Name(), "stat"))
			if err != nil {
				return false
			}
			// pid (comm) state ...: comm may hold spaces and parentheses.
			s := string(b)
			rest := s[strings.LastIndexByte(s, ')')+1:]
			if f := strings.Fields(rest); len(f) == 0 || f[0] != "T" {
				return false
			}
		}
		at = time.Now()
		return true
	})
	return at
}

// resume lets a paused replica go on (SIGCONT).
func (r *replica) resume() {
	r.mu.Lock()
	cmd := r.cmd
	r.mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		r.e.t.Fatal(err)
	}
}

// liveRunners counts the runners the state has not closed.
func liveRunners(t testing.TB, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM runners WHERE state NOT IN ('deleted', 'failed')`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// interrupted is the reason the new leader gives a runner whose launch the
// old one did not finish (scheduler.Reconcile).
const interrupted = "launch interrupted"

// checkLaunches checks, after every job completed, that each job ran
// successfully on a runner of its own; that no runner name was asked for
// twice, at GitHub or at LXD; and that each JIT config and each instance
// created beyond one per job was for a runner whose launch a lost leader
// had not finished and its successor tore down, as the state database
// records it. It needs options.record.
func (e *env) checkLaunches(db *sql.DB, ids []int64) {
	t := e.t
	t.Helper()
	ran := map[string]int64{}
	for _, id := range ids {
		j, _ := e.fake.Job(id)
		if j.Status != ghfake.StatusCompleted || j.Conclusion != ghfake.ConclusionSuccess {
			t.Errorf("job %d: %s, %s (runner %q)", id, j.Status, j.Conclusion, j.RunnerName)
			continue
		}
		if other, dup := ran[j.RunnerName]; dup {
			t.Errorf("jobs %d and %d both ran on %s", other, id, j.RunnerName)
		}
		ran[j.RunnerName] = id
	}
	count := func(names []string) map[string]int {
		m := map[string]int{}
		for _, n := range names {
			m[n]++
		}
		return m
	}
	jit, created := count(e.calls.named("github")), count(e.calls.named("lxd"))
	if n, served := len(e.calls.named("github")), e.jitCalls(); n != served {
		t.Errorf("the stand-in served %d JIT configs, the replicas' proxies saw %d", served, n)
	}
	for name, n := range jit {
		if n > 1 {
			t.Errorf("JIT config for %s asked %d times", name, n)
		}
	}
	for name, n := range created {
		if n > 1 {
			t.Errorf("instance %s created %d times", name, n)
		}
		if jit[name] == 0 {
			t.Errorf("instance %s created without a JIT config", name)
		}
	}
	for name, id := range ran {
		if jit[name] == 0 || created[name] == 0 {
			t.Errorf("job %d ran on %s, which no replica launched", id, name)
		}
	}
	reasons := map[string]string{}
	rows, err := db.QueryContext(e.ctx, `SELECT name, state, reason FROM runners`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, state, reason string
		if err := rows.Scan(&name, &state, &reason); err != nil {
			t.Fatal(err)
		}
		reasons[name] = state + ": " + reason
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var extra []string
	for name := range jit {
		if _, ok := ran[name]; ok {
			continue
		}
		extra = append(extra, name)
		if !strings.Contains(reasons[name], interrupted) {
			t.Errorf("runner %s got a JIT config, ran no job, and was not a launch cut short: %q", name, reasons[name])
		}
	}
	sort.Strings(extra)
	extraCreated := 0
	for _, name := range extra {
		if created[name] > 0 {
			extraCreated++
		}
	}
	t.Logf("%d jobs on %d runners; %d JIT configs and %d instances created, of which %d and %d for launches cut short: %s",
		len(ids), len(ran), len(jit), len(created), len(extra), extraCreated, strings.Join(extra, " "))
	if len(jit) != len(ran)+len(extra) || len(ran) != len(ids) {
		t.Errorf("JIT configs %d != jobs %d + launches cut short %d", len(jit), len(ids), len(extra))
	}
}
