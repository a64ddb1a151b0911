package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// TestContract checks, on both backends, what the scheduler and the admin
// API rely on from every fleet.Tx method.
func TestContract(t *testing.T) { eachBackend(t, testContract) }

func testContract(t *testing.T, open func() *Store) {
	st := open()
	ctx := context.Background()
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	update := func(fn func(tx fleet.Tx) error) {
		t.Helper()
		if err := st.Update(ctx, fn); err != nil {
			t.Fatal(err)
		}
	}
	view := func(fn func(tx fleet.Tx) error) {
		t.Helper()
		if err := st.View(ctx, fn); err != nil {
			t.Fatal(err)
		}
	}
	const bigID = 1<<53 + 1 // more than a float64 holds exactly

	// Jobs: every field round-trips; the queue is FIFO by queued time.
	jobs := []fleet.Job{
		{ID: bigID, RunID: 7, InstallationID: 9, Org: "acme", Repo: "acme/app", Labels: []string{"self-hosted", "ünï"},
			Pool: "linux", State: fleet.JobQueued, DeliveryID: "d1", QueuedAt: t0.Add(2 * time.Second)},
		{ID: 2, InstallationID: 9, Org: "acme", Repo: "acme/app", Pool: "linux", State: fleet.JobQueued, QueuedAt: t0},
		{ID: 3, InstallationID: 8, Org: "other", Repo: "other/x", Pool: "gpu", State: fleet.JobInProgress, RunnerName: "r1",
			QueuedAt: t0.Add(time.Second), StartedAt: t0.Add(3 * time.Second), Attempts: 2},
		{ID: 4, InstallationID: 9, Org: "acme", State: fleet.JobIgnored, Reason: "no pool", QueuedAt: t0.Add(4 * time.Second)},
	}
	update(func(tx fleet.Tx) error {
		for _, j := range jobs {
			if err := tx.PutJob(j); err != nil {
				return err
			}
		}
		return nil
	})
	view(func(tx fleet.Tx) error {
		got, err := tx.Job(bigID)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(jobs[0]) {
			t.Errorf("Job(%d) = %+v, %v\nwant %+v", int64(bigID), got, err, jobs[0])
		}
		if _, err := tx.Job(99); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("Job(99): %v, want ErrNotFound", err)
		}
		q, err := tx.QueuedJobs()
		if err != nil || len(q) != 2 || q[0].ID != 2 || q[1].ID != bigID {
			t.Errorf("QueuedJobs = %v, %v; want 2 then %d", ids(q), err, int64(bigID))
		}
		all, err := tx.Jobs(fleet.JobFilter{})
		if err != nil || !slices.Equal(ids(all), []int64{4, bigID, 3, 2}) {
			t.Errorf("Jobs() = %v, %v; want newest first", ids(all), err)
		}
		some, err := tx.Jobs(fleet.JobFilter{Pool: "linux", State: fleet.JobQueued, Limit: 1})
		if err != nil || !slices.Equal(ids(some), []int64{bigID}) {
			t.Errorf("Jobs(linux, queued, 1) = %v, %v", ids(some), err)
		}
		if j, err := tx.JobByRunner("r1"); err != nil || j.ID != 3 || j.Attempts != 2 || !j.StartedAt.Equal(jobs[2].StartedAt) {
			t.Errorf("JobByRunner(r1) = %+v, %v", j, err)
		}
		if _, err := tx.JobByRunner("nobody"); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("JobByRunner(nobody): %v, want ErrNotFound", err)
		}
		orgs, err := tx.JobOrgs()
		if err != nil || fmt.Sprint(orgs) != "[{9 acme} {8 other}]" {
			t.Errorf("JobOrgs = %v, %v", orgs, err)
		}
		return nil
	})

	// An update that fails keeps nothing of itself.
	boom := errors.New("boom")
	if err := st.Update(ctx, func(tx fleet.Tx) error {
		j, _ := tx.Job(2)
		j.State = fleet.JobCompleted
		if err := tx.PutJob(j); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want fn's error", err)
	}
	view(func(tx fleet.Tx) error {
		if j, _ := tx.Job(2); j.State != fleet.JobQueued {
			t.Errorf("a failed update was kept: job 2 is %s", j.State)
		}
		return nil
	})

	// Runners: live ones oldest first; all newest first; orgs.
	runners := []fleet.Runner{
		{Name: "b", Pool: "linux", InstallationID: 9, Org: "acme", JobID: bigID, RunnerID: bigID, State: fleet.RunnerStarted,
			DeleteMode: fleet.ModeSurplus, Reason: "r", CreatedAt: t0, StartedAt: t0.Add(time.Second),
			OnlineAt: t0.Add(2 * time.Second), BusyAt: t0.Add(3 * time.Second)},
		{Name: "a", Pool: "linux", Org: "acme", State: fleet.RunnerLaunching, CreatedAt: t0},
		{Name: "c", Pool: "gpu", Org: "other", InstallationID: 8, State: fleet.RunnerDeleted, CreatedAt: t0.Add(time.Minute),
			EndedAt: t0.Add(2 * time.Minute)},
	}
	update(func(tx fleet.Tx) error {
		for _, r := range runners {
			if err := tx.PutRunner(r); err != nil {
				return err
			}
		}
		return nil
	})
	view(func(tx fleet.Tx) error {
		if got, err := tx.Runner("b"); err != nil || fmt.Sprint(got) != fmt.Sprint(runners[0]) {
			t.Errorf("Runner(b) = %+v, %v\nwant %+v", got, err, runners[0])
		}
		if _, err := tx.Runner("z"); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("Runner(z): %v, want ErrNotFound", err)
		}
		live, err := tx.LiveRunners()
		if err != nil || !slices.Equal(names(live), []string{"a", "b"}) {
			t.Errorf("LiveRunners = %v, %v", names(live), err)
		}
		all, err := tx.Runners(0)
		if err != nil || !slices.Equal(names(all), []string{"c", "b", "a"}) {
			t.Errorf("Runners(0) = %v, %v", names(all), err)
		}
		if one, err := tx.Runners(1); err != nil || !slices.Equal(names(one), []string{"c"}) {
			t.Errorf("Runners(1) = %v, %v", names(one), err)
		}
		orgs, err := tx.RunnerOrgs()
		if err != nil || len(orgs) != 3 {
			t.Errorf("RunnerOrgs = %v, %v; want acme by two installations and other", orgs, err)
		}
		return nil
	})

	// Timelines, drained pools, deliveries.
	update(func(tx fleet.Tx) error {
		for i, k := range []string{"queued", "accepted", "launched"} {
			if err := tx.AddEvent(bigID, t0.Add(time.Duration(i)*time.Millisecond), k, "d-"+k); err != nil {
				return err
			}
		}
		if err := tx.AddEvent(0, t0, "warm", "not recorded"); err != nil {
			return err
		}
		if err := tx.SetDrained("gpu", true); err != nil {
			return err
		}
		if err := tx.SetDrained("gpu", true); err != nil { // twice: still one
			return err
		}
		if err := tx.SetMemberDrained("node2", true); err != nil {
			return err
		}
		if err := tx.SetMemberDrained("node3", true); err != nil {
			return err
		}
		if err := tx.SetMemberDrained("node3", false); err != nil {
			return err
		}
		return tx.SetDrained("linux", false) // never drained: nothing
	})
	for i := range 3 {
		if _, err := st.Record(ctx, fleet.Delivery{DeliveryID: fmt.Sprint("g", i), Action: fleet.ActionQueued, JobID: int64(i),
			Public: i == 1, Labels: []string{"x"}, ReceivedAt: t0}); err != nil {
			t.Fatal(err)
		}
	}
	var first []fleet.Delivery
	update(func(tx fleet.Tx) error {
		var err error
		if first, err = tx.PendingDeliveries(2); err != nil {
			return err
		}
		return tx.MarkApplied(first[0].Seq)
	})
	view(func(tx fleet.Tx) error {
		evs, err := tx.Events(bigID)
		if err != nil || len(evs) != 3 || evs[0].Kind != "queued" || evs[2].Detail != "d-launched" || !evs[1].At.Equal(t0.Add(time.Millisecond)) {
			t.Errorf("Events = %+v, %v", evs, err)
		}
		if evs, _ := tx.Events(0); len(evs) != 0 {
			t.Errorf("job 0 has a timeline: %+v", evs)
		}
		if d, err := tx.Drained(); err != nil || fmt.Sprint(d) != "map[gpu:true]" {
			t.Errorf("Drained = %v, %v", d, err)
		}
		if d, err := tx.DrainedMembers(); err != nil || fmt.Sprint(d) != "map[node2:true]" {
			t.Errorf("DrainedMembers = %v, %v", d, err)
		}
		rest, err := tx.PendingDeliveries(10)
		if err != nil || len(rest) != 2 || rest[0].DeliveryID != "g1" || !rest[0].Public || rest[1].Public ||
			rest[0].Seq <= first[0].Seq || rest[0].Action != fleet.ActionQueued {
			t.Errorf("PendingDeliveries after one applied = %+v, %v", rest, err)
		}
		return nil
	})

	// The last webhook heard: none at first, then the latest, whatever the
	// order replicas write in.
	view(func(tx fleet.Tx) error {
		if w, err := tx.LastWebhook(); err != nil || w != (fleet.Webhook{}) {
			t.Errorf("LastWebhook before any = %+v, %v; want zero", w, err)
		}
		return nil
	})
	for _, w := range []fleet.Webhook{{Event: "ping", At: t0.Add(time.Second)}, {Event: "workflow_job", At: t0.Add(3 * time.Second)}, {Event: "late", At: t0.Add(2 * time.Second)}} {
		update(func(tx fleet.Tx) error { return tx.HeardWebhook(w.Event, w.At) })
	}
	view(func(tx fleet.Tx) error {
		if w, err := tx.LastWebhook(); err != nil || w.Event != "workflow_job" || !w.At.Equal(t0.Add(3*time.Second)) {
			t.Errorf("LastWebhook = %+v, %v; want workflow_job at +3s", w, err)
		}
		return nil
	})

	// Installations: the latest word on each wins, whatever the order
	// replicas write in.
	for _, in := range []fleet.Installation{
		{ID: 9, Login: "acme", State: fleet.InstallationActive, At: t0.Add(time.Second)},
		{ID: 9, Login: "acme", State: fleet.InstallationDeleted, At: t0.Add(3 * time.Second)},
		{ID: 9, Login: "acme", State: fleet.InstallationActive, At: t0.Add(2 * time.Second)}, // late
		{ID: bigID, Login: "other", State: fleet.InstallationSuspended, At: t0},
	} {
		update(func(tx fleet.Tx) error { return tx.PutInstallation(in) })
	}
	view(func(tx fleet.Tx) error {
		got, err := tx.Installations()
		want := fmt.Sprint([]fleet.Installation{
			{ID: 9, Login: "acme", State: fleet.InstallationDeleted, At: t0.Add(3 * time.Second)},
			{ID: bigID, Login: "other", State: fleet.InstallationSuspended, At: t0},
		})
		if err != nil || fmt.Sprint(got) != want {
			t.Errorf("Installations = %v, %v\nwant %v", got, err, want)
		}
		return nil
	})

	// Prepared instances: every field round-trips, oldest first; a delete
	// of a missing row is no error.
	prepared := []fleet.Prepared{
		{Name: "p2", Pool: "linux", Image: "abc", Member: "node2", State: fleet.PreparedReady, CreatedAt: t0.Add(time.Second)},
		{Name: "p1", Pool: "gpu", State: fleet.PreparedCreating, CreatedAt: t0},
	}
	update(func(tx fleet.Tx) error {
		for _, p := range prepared {
			if err := tx.PutPrepared(p); err != nil {
				return err
			}
		}
		p := prepared[1]
		p.State, p.Reason, p.Image = fleet.PreparedDeleting, "image changed", "def"
		prepared[1] = p
		return tx.PutPrepared(p)
	})
	view(func(tx fleet.Tx) error {
		got, err := tx.PreparedInstances()
		if want := fmt.Sprint([]fleet.Prepared{prepared[1], prepared[0]}); err != nil || fmt.Sprint(got) != want {
			t.Errorf("PreparedInstances = %v, %v\nwant %v", got, err, want)
		}
		return nil
	})
	update(func(tx fleet.Tx) error {
		if err := tx.DeletePrepared("p1"); err != nil {
			return err
		}
		return tx.DeletePrepared("nothing")
	})
	view(func(tx fleet.Tx) error {
		if got, err := tx.PreparedInstances(); err != nil || len(got) != 1 || got[0].Name != "p2" {
			t.Errorf("PreparedInstances after a delete = %v, %v", got, err)
		}
		return nil
	})
}

func ids(js []fleet.Job) []int64 {
	var out []int64
	for _, j := range js {
		out = append(out, j.ID)
	}
	return out
}

func names(rs []fleet.Runner) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}
