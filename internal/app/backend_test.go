package app_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/app"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/metrics"
)

// at is fleettest.T0 plus s seconds.
func at(s int) time.Time { return fleettest.T0.Add(time.Duration(s) * time.Second) }

// seedFleet writes a fleet in every state: jobs 1..7 queued at T0+id
// seconds, and runners of both pools and of a pool no longer configured.
func seedFleet(e *env) {
	e.t.Helper()
	jobs := []fleet.Job{
		{ID: 1, Pool: "linux", State: fleet.JobQueued},
		{ID: 2, Pool: "linux", State: fleet.JobQueued},
		{ID: 3, Pool: "linux", State: fleet.JobInProgress, RunnerName: "gha-linux-busy", StartedAt: at(20)},
		{ID: 4, Pool: "gpu", State: fleet.JobQueued, Labels: gpuLabels},
		{ID: 5, Pool: "retired", State: fleet.JobQueued},
		{ID: 6, State: fleet.JobIgnored, Reason: "no pool matches the job's labels", Labels: []string{"ubuntu-latest"}},
		{ID: 7, Pool: "linux", State: fleet.JobCompleted, RunnerName: "gha-linux-done", Conclusion: "success",
			StartedAt: at(20), CompletedAt: at(80)},
	}
	runners := []fleet.Runner{
		{Name: "gha-linux-new", Pool: "linux", State: fleet.RunnerLaunching, JobID: 1},
		{Name: "gha-linux-idle1", Pool: "linux", State: fleet.RunnerStarted, JobID: 2},
		{Name: "gha-linux-idle2", Pool: "linux", State: fleet.RunnerStarted},
		{Name: "gha-linux-busy", Pool: "linux", State: fleet.RunnerBusy, JobID: 3, CreatedAt: at(1)},
		{Name: "gha-linux-gone", Pool: "linux", State: fleet.RunnerDeleting, DeleteMode: fleet.ModeSurplus},
		{Name: "gha-linux-done", Pool: "linux", State: fleet.RunnerDeleted, JobID: 7, CreatedAt: at(8)},
		{Name: "gha-linux-fail", Pool: "linux", State: fleet.RunnerFailed},
		{Name: "gha-gpu-busy", Pool: "gpu", State: fleet.RunnerBusy},
		{Name: "gha-retired-idle", Pool: "retired", State: fleet.RunnerStarted},
	}
	e.seed(func(tx fleet.Tx) error {
		for _, j := range jobs {
			j.InstallationID, j.Org, j.Repo, j.QueuedAt = 42, "acme", "acme/app", at(int(j.ID))
			if j.Labels == nil {
				j.Labels = linuxLabels
			}
			if err := tx.PutJob(j); err != nil {
				return err
			}
		}
		for _, r := range runners {
			r.InstallationID, r.Org = 42, "acme"
			if r.CreatedAt.IsZero() {
				r.CreatedAt = fleettest.T0
			}
			if err := tx.PutRunner(r); err != nil {
				return err
			}
		}
		for _, ev := range []fleet.Event{
			{JobID: 7, At: at(7), Kind: "queued", Detail: "delivery d-7"},
			{JobID: 7, At: at(7), Kind: "accepted", Detail: "pool linux"},
			{JobID: 7, At: at(8), Kind: "launched", Detail: "instance gha-linux-done"},
			{JobID: 7, At: at(20), Kind: "in_progress", Detail: "runner gha-linux-done"},
			{JobID: 7, At: at(80), Kind: "completed", Detail: "success"},
		} {
			if err := tx.AddEvent(ev.JobID, ev.At, ev.Kind, ev.Detail); err != nil {
				return err
			}
		}
		return nil
	})
}

func TestStatusCountsPerPool(t *testing.T) {
	e := newEnv(t, nil)
	seedFleet(e)
	if code := e.call("POST", "/api/pools/gpu/drain", nil); code != http.StatusOK {
		t.Fatalf("drain gpu: status %d", code)
	}

	var st admin.Status
	if code := e.call("GET", "/api/status", &st); code != http.StatusOK {
		t.Fatalf("GET /api/status: status %d", code)
	}
	// Deleting, deleted and failed runners are not counted; nor is what
	// belongs to a pool no longer configured.
	want := []admin.PoolStatus{
		{Name: "linux", Queued: 2, Launching: 1, Idle: 2, Busy: 1, Max: 3},
		{Name: "gpu", Queued: 1, Busy: 1, Max: 1, Draining: true},
	}
	if !slices.Equal(st.Pools, want) {
		t.Errorf("pools = %+v\nwant    %+v", st.Pools, want)
	}
	var ids []int64
	for _, j := range st.Jobs {
		ids = append(ids, j.ID)
	}
	if !slices.Equal(ids, []int64{7, 6, 5, 4, 3, 2, 1}) {
		t.Errorf("jobs %v, want all, newest first", ids)
	}
	if !st.Ready || st.Checks["state"] != admin.CheckOK {
		t.Errorf("ready %v, checks %v; want ready with the state checked", st.Ready, st.Checks)
	}

	if code := e.call("POST", "/api/pools/gpu/undrain", nil); code != http.StatusOK {
		t.Fatalf("undrain gpu: status %d", code)
	}
	st = admin.Status{}
	e.call("GET", "/api/status", &st)
	if len(st.Pools) != 2 || st.Pools[1].Draining {
		t.Errorf("pools after undrain = %+v, want gpu not draining", st.Pools)
	}
}

func TestDrain(t *testing.T) {
	e := newEnv(t, nil)
	seedFleet(e)
	drained := func() map[string]bool {
		return fleettest.Read(e.t, e.st, func(tx fleet.Tx) (map[string]bool, error) { return tx.Drained() })
	}
	reason := func() string {
		var got struct{ Jobs []admin.Job }
		if code := e.call("GET", "/api/jobs?pool=gpu&state=queued", &got); code != http.StatusOK || len(got.Jobs) != 1 {
			t.Fatalf("queued jobs of gpu: status %d, %+v; want job 4", code, got.Jobs)
		}
		return got.Jobs[0].Reason
	}

	var ans struct {
		Pool     string
		Draining bool
	}
	if code := e.call("POST", "/api/pools/gpu/drain", &ans); code != http.StatusOK || ans.Pool != "gpu" || !ans.Draining {
		t.Fatalf("drain gpu: status %d, %+v", code, ans)
	}
	if d := drained(); !d["gpu"] || len(d) != 1 {
		t.Fatalf("drained pools = %v, want gpu", d)
	}
	if r := reason(); r != "pool gpu is draining" {
		t.Errorf("a queued job of a drained pool gives reason %q", r)
	}

	for _, pool := range []string{"nope", "retired"} {
		if code := e.call("POST", "/api/pools/"+pool+"/drain", nil); code != http.StatusBadRequest {
			t.Errorf("drain unknown pool %s: status %d, want 400", pool, code)
		}
		if code := e.call("POST", "/api/pools/"+pool+"/undrain", nil); code != http.StatusBadRequest {
			t.Errorf("undrain unknown pool %s: status %d, want 400", pool, code)
		}
	}
	if d := drained(); !d["gpu"] || len(d) != 1 {
		t.Fatalf("drained pools = %v after refused requests, want gpu only", d)
	}

	if code := e.call("POST", "/api/pools/gpu/undrain", &ans); code != http.StatusOK || ans.Draining {
		t.Fatalf("undrain gpu: status %d, %+v", code, ans)
	}
	if d := drained(); len(d) != 0 {
		t.Fatalf("drained pools = %v, want none", d)
	}
	if r := reason(); r != "" {
		t.Errorf("a queued job of an undrained pool gives reason %q", r)
	}
}

func TestJobs(t *testing.T) {
	e := newEnv(t, nil)
	seedFleet(e)
	tests := []struct {
		query string
		code  int
		ids   []int64
	}{
		{"", 200, []int64{7, 6, 5, 4, 3, 2, 1}},
		{"?limit=2", 200, []int64{7, 6}},
		{"?state=queued", 200, []int64{5, 4, 2, 1}},
		{"?state=ignored", 200, []int64{6}},
		{"?pool=linux", 200, []int64{7, 3, 2, 1}},
		{"?pool=linux&state=queued", 200, []int64{2, 1}},
		{"?pool=gpu&state=completed", 200, nil},
		{"?state=bogus", 400, nil},
		{"?state=Queued", 400, nil},
		{"?pool=nope", 400, nil},
		{"?pool=retired", 400, nil},
		{"?pool=nope&state=queued", 400, nil},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			var got struct{ Jobs []admin.Job }
			code := e.call("GET", "/api/jobs"+tt.query, &got)
			if code != tt.code {
				t.Fatalf("status %d, want %d", code, tt.code)
			}
			var ids []int64
			for _, j := range got.Jobs {
				ids = append(ids, j.ID)
			}
			if !slices.Equal(ids, tt.ids) {
				t.Fatalf("jobs %v, want %v", ids, tt.ids)
			}
		})
	}
}

func TestJobTimeline(t *testing.T) {
	e := newEnv(t, nil)
	seedFleet(e)

	var d admin.JobDetail
	if code := e.call("GET", "/api/jobs/7", &d); code != http.StatusOK {
		t.Fatalf("GET /api/jobs/7: status %d", code)
	}
	// Queued at 7s, its runner launched at 8s, in progress at 20s, done at 80s.
	want := admin.Job{
		ID: 7, Pool: "linux", Repo: "acme/app", State: "completed", Runner: "gha-linux-done", Conclusion: "success",
		Labels: linuxLabels, QueuedAt: at(7), StartedAt: at(20), CompletedAt: at(80),
		Wait: time.Second, Boot: 12 * time.Second, Run: time.Minute,
	}
	if !equalJob(d.Job, want) {
		t.Errorf("job 7 = %+v\nwant    %+v", d.Job, want)
	}
	if got := kinds(d.Events); got != "queued accepted launched in_progress completed" {
		t.Errorf("timeline %q", got)
	}
	if len(d.Events) == 5 && (!d.Events[2].At.Equal(at(8)) || d.Events[2].Detail != "instance gha-linux-done") {
		t.Errorf("launch step = %+v", d.Events[2])
	}

	// A warm runner launched before the job came: no wait, all boot.
	d = admin.JobDetail{}
	e.call("GET", "/api/jobs/3", &d)
	if d.Wait != 0 || d.Boot != 17*time.Second || d.Run != 0 || d.Runner != "gha-linux-busy" {
		t.Errorf("job 3: wait %v, boot %v, run %v on %q; want 0, 17s, 0 on gha-linux-busy", d.Wait, d.Boot, d.Run, d.Runner)
	}

	for _, path := range []string{"/api/jobs/999", "/api/jobs/0"} {
		want := http.StatusNotFound
		if path == "/api/jobs/0" {
			want = http.StatusBadRequest
		}
		if code := e.call("GET", path, nil); code != want {
			t.Errorf("GET %s: status %d, want %d", path, code, want)
		}
	}
}

func equalJob(a, b admin.Job) bool {
	return slices.Equal(a.Labels, b.Labels) && a.QueuedAt.Equal(b.QueuedAt) && a.StartedAt.Equal(b.StartedAt) &&
		a.CompletedAt.Equal(b.CompletedAt) &&
		a.ID == b.ID && a.Pool == b.Pool && a.Repo == b.Repo && a.State == b.State && a.Reason == b.Reason &&
		a.Runner == b.Runner && a.Conclusion == b.Conclusion && a.Wait == b.Wait && a.Boot == b.Boot && a.Run == b.Run
}

func TestDeleteInstanceOnlyOurs(t *testing.T) {
	e := newEnv(t, nil)
	ours := fleet.Instance{Name: "gha-linux-0badf00d", Managed: true, State: fleet.InstanceRunning,
		Labels: fleet.InstanceLabels{Owner: "gha-", Pool: "linux"}}
	// Another deployment's runner in the same LXD project, with a name our
	// prefix could have made.
	theirs := fleet.Instance{Name: "gha-linux-feedface", Managed: true, State: fleet.InstanceRunning,
		Labels: fleet.InstanceLabels{Owner: "staging-", Pool: "linux"}}
	// Someone's own instance, without our keys.
	pet := fleet.Instance{Name: "gha-pet", State: fleet.InstanceRunning, Labels: fleet.InstanceLabels{Owner: "gha-"}}
	for _, in := range []fleet.Instance{ours, theirs, pet} {
		e.lxd.Put(in)
	}

	for _, name := range []string{theirs.Name, pet.Name, "gha-linux-00000000"} {
		if code := e.call("DELETE", "/api/instances/"+name, nil); code != http.StatusNotFound {
			t.Errorf("DELETE %s: status %d, want 404", name, code)
		}
	}
	if got := e.lxd.Names(); !slices.Equal(got, []string{ours.Name, theirs.Name, pet.Name}) {
		t.Fatalf("instances %v after refused deletes, want all three", got)
	}

	var ans struct {
		Instance string
		Deleted  bool
	}
	if code := e.call("DELETE", "/api/instances/"+ours.Name, &ans); code != http.StatusOK || !ans.Deleted || ans.Instance != ours.Name {
		t.Fatalf("DELETE %s: status %d, %+v", ours.Name, code, ans)
	}
	if got := e.lxd.Names(); !slices.Equal(got, []string{theirs.Name, pet.Name}) {
		t.Fatalf("instances %v, want only %s gone", got, ours.Name)
	}
}

func TestMetricsReadTheState(t *testing.T) {
	m := metrics.New("test")
	e := newEnv(t, func(_ *app.Config, d *app.Deps) { d.Metrics = m })
	seedFleet(e)
	e.clock.Advance(time.Minute)

	for name, h := range map[string]http.Handler{"webhook": e.app.Handler(), "admin": e.app.AdminHandler()} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("%s listener: GET /metrics: status %d", name, rec.Code)
		}
		got := map[string]bool{}
		for _, line := range strings.Split(rec.Body.String(), "\n") {
			got[line] = true
		}
		// Gauges read at scrape time: queued jobs and the oldest one's age
		// per pool, and runner instances by state, idle for started.
		for _, want := range []string{
			metrics.JobsByState + `{pool="linux",state="queued"} 2`,
			metrics.JobsByState + `{pool="gpu",state="queued"} 1`,
			metrics.JobOldestQueuedSeconds + `{pool="linux"} 59`,
			metrics.JobOldestQueuedSeconds + `{pool="gpu"} 56`,
			metrics.InstancesByState + `{pool="linux",state="idle"} 2`,
			metrics.InstancesByState + `{pool="linux",state="launching"} 1`,
			metrics.InstancesByState + `{pool="linux",state="busy"} 1`,
			metrics.InstancesByState + `{pool="linux",state="deleting"} 1`,
			metrics.InstancesByState + `{pool="gpu",state="busy"} 1`,
		} {
			if !got[want] {
				t.Errorf("%s listener: no line %s", name, want)
			}
		}
	}
}

// A signed ping, which GitHub sends when the App is created, shows in the
// status before any job: a wrong proxy or secret is seen at once.
func TestStatusShowsTheLastWebhook(t *testing.T) {
	e := newEnv(t, nil)
	base := e.run()
	var st admin.Status
	if e.call("GET", "/api/status", &st); st.LastWebhook != nil {
		t.Fatalf("last webhook before any: %+v", st.LastWebhook)
	}
	body := []byte(`{"zen":"Keep it logically awesome.","hook_id":1}`)
	post := func(key []byte) int {
		req, err := http.NewRequest("POST", base+"/webhook", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		m := hmac.New(sha256.New, key)
		m.Write(body)
		req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(m.Sum(nil)))
		req.Header.Set("X-GitHub-Event", "ping")
		req.Header.Set("X-GitHub-Delivery", "p1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post([]byte("not the secret")); code != http.StatusUnauthorized {
		t.Fatalf("badly signed ping: %d", code)
	}
	if e.call("GET", "/api/status", &st); st.LastWebhook != nil {
		t.Fatalf("a badly signed ping was recorded: %+v", st.LastWebhook)
	}
	if code := post(secret); code != http.StatusNoContent {
		t.Fatalf("ping: %d", code)
	}
	st = admin.Status{}
	if e.call("GET", "/api/status", &st); st.LastWebhook == nil || st.LastWebhook.Event != "ping" || !st.LastWebhook.At.Equal(e.clock.Now()) {
		t.Fatalf("last webhook after a ping: %+v, want ping at %v", st.LastWebhook, e.clock.Now())
	}
}
