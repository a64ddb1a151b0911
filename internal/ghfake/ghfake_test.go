package ghfake

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v4"
	"github.com/google/go-github/v62/github"
)

func signJWT(t *testing.T, key *rsa.PrivateKey, iss string, iat, exp time.Time) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.RegisteredClaims{
		Issuer: iss, IssuedAt: jwt.NewNumericDate(iat), ExpiresAt: jwt.NewNumericDate(exp),
	}).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func do(t *testing.T, method, url, auth string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestAuth(t *testing.T) {
	e := newEnv(t, nil)
	now := time.Now()
	tokenURL := e.srv.URL() + "app/installations/7/access_tokens"
	other, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	for name, auth := range map[string]string{
		"none":        "",
		"garbage":     "Bearer nope",
		"wrong iss":   "Bearer " + signJWT(t, e.key, "43", now.Add(-time.Minute), now.Add(time.Minute)),
		"expired":     "Bearer " + signJWT(t, e.key, "42", now.Add(-20*time.Minute), now.Add(-11*time.Minute)),
		"too long":    "Bearer " + signJWT(t, e.key, "42", now.Add(-time.Minute), now.Add(15*time.Minute)),
		"other key":   "Bearer " + signJWT(t, other, "42", now.Add(-time.Minute), now.Add(time.Minute)),
		"token style": "token " + signJWT(t, e.key, "42", now.Add(-time.Minute), now.Add(time.Minute)),
	} {
		if code, _ := do(t, "POST", tokenURL, auth, nil); code != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", name, code)
		}
	}
	good := "Bearer " + signJWT(t, e.key, "42", now.Add(-30*time.Second), now.Add(2*time.Minute))
	if code, _ := do(t, "POST", e.srv.URL()+"app/installations/8/access_tokens", good, nil); code != http.StatusNotFound {
		t.Errorf("unknown installation: status %d, want 404", code)
	}
	code, body := do(t, "POST", tokenURL, good, nil)
	if code != http.StatusCreated {
		t.Fatalf("access token: status %d: %s", code, body)
	}
	var tok github.InstallationToken
	if err := json.Unmarshal(body, &tok); err != nil {
		t.Fatal(err)
	}
	if d := time.Until(tok.GetExpiresAt().Time); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("expires_at %v is not an hour ahead", tok.GetExpiresAt())
	}

	runners := e.srv.URL() + "orgs/acme/actions/runners"
	for name, tc := range map[string]struct {
		url, auth string
		want      int
	}{
		"no token":    {runners, "", 401},
		"bad token":   {runners, "token ghs_nope", 401},
		"app jwt":     {runners, good, 401},
		"other org":   {e.srv.URL() + "orgs/other/actions/runners", "token " + tok.GetToken(), 401},
		"token":       {runners, "token " + tok.GetToken(), 200},
		"bearer":      {runners, "Bearer " + tok.GetToken(), 200},
		"org case":    {e.srv.URL() + "orgs/ACME/actions/runners", "token " + tok.GetToken(), 200},
		"deliveries":  {e.srv.URL() + "app/hook/deliveries", "token " + tok.GetToken(), 401},
		"deliveries2": {e.srv.URL() + "app/hook/deliveries", good, 200},
	} {
		if code, _ := do(t, "GET", tc.url, tc.auth, nil); code != tc.want {
			t.Errorf("%s: status %d, want %d", name, code, tc.want)
		}
	}
}

func TestRunnerGroupsAndJITErrors(t *testing.T) {
	e := newEnv(t, nil)
	gh := e.gh()
	groups, _, err := gh.Actions.ListOrganizationRunnerGroups(ctx(t), "acme", &github.ListOrgRunnerGroupOptions{ListOptions: github.ListOptions{PerPage: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if groups.TotalCount != 2 || len(groups.RunnerGroups) != 1 || groups.RunnerGroups[0].GetName() != "Default" || !groups.RunnerGroups[0].GetDefault() {
		t.Fatalf("groups page 1: %+v", groups)
	}

	cfg := e.jit("r1", "self-hosted", "linux")
	r := cfg.GetRunner()
	if r.GetID() == 0 || r.GetName() != "r1" || r.GetStatus() != "offline" || r.GetBusy() || len(r.Labels) != 2 ||
		r.Labels[0].GetName() != "self-hosted" || r.Labels[0].GetType() != "custom" || r.Labels[0].GetID() == 0 {
		t.Fatalf("runner: %v", r)
	}
	dec, err := DecodeJITConfig(cfg.GetEncodedJITConfig())
	if err != nil {
		t.Fatal(err)
	}
	if dec.RunnerID != r.GetID() || dec.RunnerName != "r1" || dec.URL != e.srv.URL() || dec.Secret == "" {
		t.Fatalf("decoded: %+v", dec)
	}
	if s := fmt.Sprintf("%v %+v %#v", dec, dec, dec); strings.Contains(s, dec.Secret.Reveal()) {
		t.Fatalf("decoded config prints its secret: %s", s)
	}

	for name, tc := range map[string]struct {
		req  github.GenerateJITConfigRequest
		want int
	}{
		"duplicate":     {github.GenerateJITConfigRequest{Name: "r1", RunnerGroupID: 1, Labels: []string{"x"}}, 409},
		"duplicate ci":  {github.GenerateJITConfigRequest{Name: "R1", RunnerGroupID: 1, Labels: []string{"x"}}, 409},
		"no labels":     {github.GenerateJITConfigRequest{Name: "r2", RunnerGroupID: 1}, 422},
		"unknown group": {github.GenerateJITConfigRequest{Name: "r2", RunnerGroupID: 99, Labels: []string{"x"}}, 422},
	} {
		_, _, err := gh.Actions.GenerateOrgJITConfig(ctx(t), "acme", &tc.req)
		if statusOf(err) != tc.want {
			t.Errorf("%s: %v, want status %d", name, err, tc.want)
		}
	}
	if rs := e.srv.Runners(); len(rs) != 1 {
		t.Fatalf("runners after errors: %+v", rs)
	}
}

func TestRunnersPaginationGetDelete(t *testing.T) {
	e := newEnv(t, nil)
	gh := e.gh()
	for i := range 5 {
		e.jit(fmt.Sprintf("r%d", i), "linux")
	}
	var names []string
	opts := &github.ListRunnersOptions{ListOptions: github.ListOptions{PerPage: 2}}
	pages := 0
	for {
		rs, resp, err := gh.Actions.ListOrganizationRunners(ctx(t), "acme", opts)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if rs.TotalCount != 5 {
			t.Fatalf("total_count %d", rs.TotalCount)
		}
		for _, r := range rs.Runners {
			names = append(names, r.GetName())
		}
		if resp.NextPage == 0 {
			break
		}
		opts.Page = resp.NextPage
	}
	if pages != 3 || strings.Join(names, ",") != "r0,r1,r2,r3,r4" {
		t.Fatalf("pages %d names %v", pages, names)
	}

	id := e.srv.Runners()[0].ID
	r, _, err := gh.Actions.GetOrganizationRunner(ctx(t), "acme", id)
	if err != nil || r.GetName() != "r0" {
		t.Fatalf("get: %v %v", r, err)
	}
	if _, err := gh.Actions.RemoveOrganizationRunner(ctx(t), "acme", id); err != nil {
		t.Fatal(err)
	}
	if _, _, err := gh.Actions.GetOrganizationRunner(ctx(t), "acme", id); statusOf(err) != 404 {
		t.Fatalf("get deleted: %v", err)
	}
	if _, err := gh.Actions.RemoveOrganizationRunner(ctx(t), "acme", id); statusOf(err) != 404 {
		t.Fatalf("delete deleted: %v", err)
	}
	got := e.srv.Requests()
	if got["GET /orgs/{org}/actions/runners"] != 3 || got["DELETE /orgs/{org}/actions/runners/{id}"] != 2 {
		t.Fatalf("requests: %v", got)
	}
}

// A runner launched for one job may run another: the oldest matching job
// goes to whichever idle runner asks first.
func TestAnyRunnerTakesAnyJob(t *testing.T) {
	e := newEnv(t, nil)
	jobA := e.srv.QueueJob(JobSpec{Labels: []string{"self-hosted", "Linux"}, Repo: "acme/a", Duration: 50 * time.Millisecond})
	jobGPU := e.srv.QueueJob(JobSpec{Labels: []string{"gpu"}, Repo: "acme/gpu"})
	jobB := e.srv.QueueJob(JobSpec{Labels: []string{"linux"}, Repo: "acme/b", Duration: 50 * time.Millisecond})

	// The runner "for B" connects first and gets A, the oldest job it covers.
	forB := e.jit("runner-for-b", "self-hosted", "linux", "x64")
	doneB, _ := startRunner(t, forB.GetEncodedJITConfig())
	a, err := e.srv.WaitJob(ctx(t), jobA, func(j JobView) bool { return j.Status == StatusCompleted })
	if err != nil {
		t.Fatal(err)
	}
	if a.RunnerName != "runner-for-b" || a.Conclusion != ConclusionSuccess {
		t.Fatalf("job A: %+v", a)
	}
	if err := result(t, doneB); err != nil {
		t.Fatalf("runner: %v", err)
	}

	forA := e.jit("runner-for-a", "self-hosted", "linux")
	doneA, _ := startRunner(t, forA.GetEncodedJITConfig())
	b, err := e.srv.WaitJob(ctx(t), jobB, func(j JobView) bool { return j.Status == StatusCompleted })
	if err != nil {
		t.Fatal(err)
	}
	if b.RunnerName != "runner-for-a" {
		t.Fatalf("job B: %+v", b)
	}
	if err := result(t, doneA); err != nil {
		t.Fatalf("runner: %v", err)
	}
	if j, _ := e.srv.Job(jobGPU); j.Status != StatusQueued {
		t.Fatalf("gpu job: %+v", j)
	}
	// JIT runners are single-use: both records are gone.
	if rs := e.srv.Runners(); len(rs) != 0 {
		t.Fatalf("runners left: %+v", rs)
	}

	// Webhooks: queued, in_progress, completed for each, in order, signed.
	err = e.srv.WaitDeliveries(ctx(t), func(ds []DeliveryView) bool { return len(ds) == 7 })
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []int64{jobA, jobB} {
		got := e.sink.forJob(id)
		if len(got) != 3 || got[0].action != "queued" || got[1].action != "in_progress" || got[2].action != "completed" {
			t.Fatalf("job %d webhooks: %+v", id, got)
		}
	}
	if e.sink.bad != 0 {
		t.Fatalf("%d deliveries with bad signatures", e.sink.bad)
	}

	// The in_progress and completed payloads carry the runner; GitHub's
	// types parse them.
	got := e.sink.forJob(jobB)
	ev, err := github.ParseWebHook("workflow_job", got[1].body)
	if err != nil {
		t.Fatal(err)
	}
	wj := ev.(*github.WorkflowJobEvent)
	j := wj.GetWorkflowJob()
	if j.GetRunnerName() != "runner-for-a" || j.GetRunnerID() == 0 || j.GetRunnerGroupID() != 1 || j.GetRunnerGroupName() != "Default" ||
		j.GetStatus() != "in_progress" || j.GetRunID() == 0 || j.GetRunAttempt() != 1 || j.GetCreatedAt().IsZero() ||
		strings.Join(j.Labels, ",") != "linux" || j.GetWorkflowName() != "CI" || j.GetHeadBranch() != "main" || j.GetHTMLURL() == "" {
		t.Fatalf("in_progress job: %v", j)
	}
	if wj.GetRepo().GetFullName() != "acme/b" || !wj.GetRepo().GetPrivate() || wj.GetRepo().GetVisibility() != "private" ||
		wj.GetOrg().GetLogin() != "acme" || wj.GetInstallation().GetID() != 7 || wj.GetSender().GetLogin() == "" {
		t.Fatalf("envelope: %v", wj)
	}
	h := got[1].header
	if h.Get("X-GitHub-Hook-Installation-Target-Type") != "integration" || h.Get("X-GitHub-Hook-ID") == "" ||
		h.Get("User-Agent") != "GitHub-Hookshot/fake" || h.Get("Content-Type") != "application/json" {
		t.Fatalf("headers: %v", h)
	}
	ev, _ = github.ParseWebHook("workflow_job", got[2].body)
	done := ev.(*github.WorkflowJobEvent).GetWorkflowJob()
	if done.GetConclusion() != "success" || done.GetRunnerName() != "runner-for-a" || done.GetCompletedAt().IsZero() {
		t.Fatalf("completed job: %v", done)
	}
	// Every delivery has its own guid.
	guids := map[string]bool{}
	for _, r := range e.sink.all() {
		guids[r.guid] = true
	}
	if len(guids) != 7 {
		t.Fatalf("guids not unique: %d", len(guids))
	}
}

func TestJITSingleUse(t *testing.T) {
	e := newEnv(t, nil)
	cfg := e.jit("once", "linux").GetEncodedJITConfig()
	first, _ := startRunner(t, cfg)
	if err := e.srv.WaitRunners(ctx(t), func(rs []RunnerView) bool { return len(rs) == 1 && rs[0].Status == "online" }); err != nil {
		t.Fatal(err)
	}
	// A second runner with the same config is refused while the first runs.
	second, _ := startRunner(t, cfg)
	if err := result(t, second); !errors.Is(err, ErrRunnerRefused) {
		t.Fatalf("second use: %v", err)
	}
	e.srv.QueueJob(JobSpec{Labels: []string{"linux"}})
	if err := result(t, first); err != nil {
		t.Fatal(err)
	}
	// After the job the record is gone: the config is useless.
	third, _ := startRunner(t, cfg)
	if err := result(t, third); !errors.Is(err, ErrRunnerRemoved) {
		t.Fatalf("use after job: %v", err)
	}

	// Deleted before it ever connected: refused too.
	cfg2 := e.jit("deleted", "linux")
	if _, err := e.gh().Actions.RemoveOrganizationRunner(ctx(t), "acme", cfg2.GetRunner().GetID()); err != nil {
		t.Fatal(err)
	}
	fourth, _ := startRunner(t, cfg2.GetEncodedJITConfig())
	if err := result(t, fourth); !errors.Is(err, ErrRunnerRemoved) {
		t.Fatalf("deleted runner: %v", err)
	}
}

func TestCancel(t *testing.T) {
	e := newEnv(t, nil)
	queued := e.srv.QueueJob(JobSpec{Labels: []string{"linux"}})
	if err := e.srv.CancelJob(queued); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.CancelJob(queued); !errors.Is(err, ErrJobCompleted) {
		t.Fatalf("cancel twice: %v", err)
	}
	running := e.srv.QueueJob(JobSpec{Labels: []string{"linux"}, Duration: time.Hour})
	cfg := e.jit("long", "linux")
	done, _ := startRunner(t, cfg.GetEncodedJITConfig())
	if _, err := e.srv.WaitJob(ctx(t), running, func(j JobView) bool { return j.Status == StatusInProgress }); err != nil {
		t.Fatal(err)
	}
	// GitHub refuses to delete a busy runner.
	if _, err := e.gh().Actions.RemoveOrganizationRunner(ctx(t), "acme", cfg.GetRunner().GetID()); statusOf(err) != 422 {
		t.Fatalf("delete busy: %v", err)
	}
	if rs := e.srv.Runners(); len(rs) != 1 || !rs[0].Busy || rs[0].Status != "online" || rs[0].JobID != running {
		t.Fatalf("runners: %+v", rs)
	}
	if err := e.srv.CancelJob(running); err != nil {
		t.Fatal(err)
	}
	if err := result(t, done); err != nil {
		t.Fatalf("cancelled runner: %v", err)
	}
	if rs := e.srv.Runners(); len(rs) != 0 {
		t.Fatalf("runners: %+v", rs)
	}
	if err := e.srv.WaitDeliveries(ctx(t), func(ds []DeliveryView) bool { return len(ds) == 5 }); err != nil {
		t.Fatal(err)
	}
	q := e.sink.forJob(queued)
	if len(q) != 2 || q[1].action != "completed" {
		t.Fatalf("queued job hooks: %+v", q)
	}
	var raw struct {
		WorkflowJob map[string]any `json:"workflow_job"`
	}
	if err := json.Unmarshal(q[1].body, &raw); err != nil {
		t.Fatal(err)
	}
	if raw.WorkflowJob["conclusion"] != "cancelled" || raw.WorkflowJob["runner_name"] != nil {
		t.Fatalf("cancelled queued job: %v", raw.WorkflowJob)
	}
	r := e.sink.forJob(running)
	ev, _ := github.ParseWebHook("workflow_job", r[len(r)-1].body)
	if j := ev.(*github.WorkflowJobEvent).GetWorkflowJob(); j.GetConclusion() != "cancelled" || j.GetRunnerName() != "long" {
		t.Fatalf("cancelled running job: %v", j)
	}
}

func TestDeleteIdleRunnerStopsIt(t *testing.T) {
	e := newEnv(t, nil)
	cfg := e.jit("idle", "linux")
	done, _ := startRunner(t, cfg.GetEncodedJITConfig())
	if err := e.srv.WaitRunners(ctx(t), func(rs []RunnerView) bool { return len(rs) == 1 && rs[0].Status == "online" }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.gh().Actions.RemoveOrganizationRunner(ctx(t), "acme", cfg.GetRunner().GetID()); err != nil {
		t.Fatal(err)
	}
	if err := result(t, done); !errors.Is(err, ErrRunnerRemoved) {
		t.Fatalf("removed runner: %v", err)
	}
}

func TestHangRunners(t *testing.T) {
	e := newEnv(t, nil)
	e.srv.HangRunners(1)
	e.srv.QueueJob(JobSpec{Labels: []string{"linux"}})
	hung, cancel := startRunner(t, e.jit("hangs", "linux").GetEncodedJITConfig())
	if err := e.srv.WaitRunners(ctx(t), func(rs []RunnerView) bool { return len(rs) == 1 && rs[0].Used }); err != nil {
		t.Fatal(err)
	}
	if rs := e.srv.Runners(); !rs[0].Hung || rs[0].Status != "offline" {
		t.Fatalf("hung runner: %+v", rs)
	}
	select {
	case err := <-hung:
		t.Fatalf("hung runner returned: %v", err)
	default:
	}
	cancel()
	if err := result(t, hung); err == nil {
		t.Fatal("hung runner returned nil")
	}
	// The next one works normally and takes the job.
	ok, _ := startRunner(t, e.jit("works", "linux").GetEncodedJITConfig())
	if err := result(t, ok); err != nil {
		t.Fatal(err)
	}
}

// A stalled runner comes online, goes offline when it stops polling, and
// is never given a job; the next runner takes the job.
func TestStallRunners(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.RunnerOfflineAfter = 300 * time.Millisecond })
	e.srv.StallRunners(1)
	stalled, cancel := startRunner(t, e.jit("stalls", "linux").GetEncodedJITConfig())
	if err := e.srv.WaitRunners(ctx(t), func(rs []RunnerView) bool { return len(rs) == 1 && rs[0].Status == "online" }); err != nil {
		t.Fatal(err)
	}
	id := e.srv.QueueJob(JobSpec{Labels: []string{"linux"}})
	time.Sleep(600 * time.Millisecond)
	if rs := e.srv.Runners(); rs[0].Status != "offline" || rs[0].Busy {
		t.Fatalf("stalled runner: %+v, want offline and idle", rs[0])
	}
	if j, _ := e.srv.Job(id); j.Status != StatusQueued {
		t.Fatalf("job given to a silent runner: %+v", j)
	}
	cancel()
	if err := result(t, stalled); err == nil {
		t.Fatal("stalled runner returned nil")
	}
	ok, _ := startRunner(t, e.jit("works", "linux").GetEncodedJITConfig())
	if err := result(t, ok); err != nil {
		t.Fatal(err)
	}
}

func TestDeliveriesAndRedeliver(t *testing.T) {
	e := newEnv(t, nil)
	e.srv.DropWebhooks(func(event, action string, _ int64) bool { return event == "workflow_job" && action == "queued" })
	id := e.srv.QueueJob(JobSpec{Labels: []string{"linux"}})
	e.srv.Ping()
	if err := e.srv.WaitDeliveries(ctx(t), func(ds []DeliveryView) bool { return len(ds) == 2 }); err != nil {
		t.Fatal(err)
	}
	ds := e.srv.Deliveries()
	if !ds[0].Failed || !ds[0].Dropped || ds[0].StatusCode != 502 || ds[0].JobID != id || ds[0].Action != "queued" {
		t.Fatalf("dropped delivery: %+v", ds[0])
	}
	if ds[1].Failed || ds[1].Event != "ping" || ds[1].StatusCode != 204 {
		t.Fatalf("ping delivery: %+v", ds[1])
	}
	if got := e.sink.all(); len(got) != 1 || got[0].event != "ping" {
		t.Fatalf("received: %+v", got)
	}

	// The App's deliveries API, through go-github, newest first, by cursor.
	app := e.appGH()
	list, resp, err := app.Apps.ListHookDeliveries(ctx(t), &github.ListCursorOptions{PerPage: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].GetEvent() != "ping" || resp.Cursor == "" {
		t.Fatalf("page 1: %v cursor %q", list, resp.Cursor)
	}
	list, resp, err = app.Apps.ListHookDeliveries(ctx(t), &github.ListCursorOptions{PerPage: 1, Cursor: resp.Cursor})
	if err != nil {
		t.Fatal(err)
	}
	d := list[0]
	if len(list) != 1 || resp.Cursor != "" || d.GetGUID() != ds[0].GUID || d.GetStatusCode() != 502 || d.GetAction() != "queued" ||
		d.GetEvent() != "workflow_job" || d.GetRedelivery() || d.DeliveredAt == nil || d.GetInstallationID() != 7 || d.GetRepositoryID() == 0 {
		t.Fatalf("page 2: %v cursor %q", list, resp.Cursor)
	}

	// Redeliver through the API (202, which go-github reports as an
	// AcceptedError), then through the test hook: same guid, same payload.
	_, _, err = app.Apps.RedeliverHookDelivery(ctx(t), d.GetID())
	var accepted *github.AcceptedError
	if err != nil && !errors.As(err, &accepted) {
		t.Fatal(err)
	}
	if err := e.srv.Redeliver(ds[0].GUID); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.WaitDeliveries(ctx(t), func(ds []DeliveryView) bool { return len(ds) == 4 }); err != nil {
		t.Fatal(err)
	}
	got := e.sink.all()
	if len(got) != 3 || got[1].guid != ds[0].GUID || got[2].guid != ds[0].GUID || got[1].action != "queued" || !bytes.Equal(got[1].body, got[2].body) {
		t.Fatalf("redeliveries: %+v", got)
	}
	if all := e.srv.Deliveries(); !all[2].Redelivery || all[2].Failed || all[2].ID == ds[0].ID {
		t.Fatalf("redelivery record: %+v", all[2])
	}
	if err := e.srv.Redeliver("nope"); err == nil {
		t.Fatal("redeliver unknown guid: no error")
	}
	if e.sink.bad != 0 {
		t.Fatalf("%d bad signatures", e.sink.bad)
	}
}

func TestWebhookFailuresRecorded(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.WebhookURL = "" })
	e.srv.Ping()
	if err := e.srv.WaitDeliveries(ctx(t), func(ds []DeliveryView) bool { return len(ds) == 1 }); err != nil {
		t.Fatal(err)
	}
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) }))
	defer failing.Close()
	e.srv.SetWebhookURL(failing.URL)
	e.srv.Ping()
	if err := e.srv.WaitDeliveries(ctx(t), func(ds []DeliveryView) bool { return len(ds) == 2 }); err != nil {
		t.Fatal(err)
	}
	e.srv.SetWebhookURL("http://127.0.0.1:1/") // nothing listens on port 1
	e.srv.Ping()
	if err := e.srv.WaitDeliveries(ctx(t), func(ds []DeliveryView) bool { return len(ds) == 3 }); err != nil {
		t.Fatal(err)
	}
	ds := e.srv.Deliveries()
	for i, want := range []int{0, 500, 0} {
		if !ds[i].Failed || ds[i].StatusCode != want {
			t.Errorf("delivery %d: %+v, want failed with %d", i, ds[i], want)
		}
	}
}

func TestFaultHook(t *testing.T) {
	e := newEnv(t, nil)
	gh := e.gh()
	fails := 2
	e.srv.SetFault(func(r *http.Request) (int, http.Header, bool) {
		if r.Method == "GET" && strings.HasSuffix(r.URL.Path, "/actions/runners") && fails > 0 {
			fails--
			return http.StatusBadGateway, nil, true
		}
		return 0, nil, false
	})
	for range 2 {
		if _, _, err := gh.Actions.ListOrganizationRunners(ctx(t), "acme", nil); statusOf(err) != 502 {
			t.Fatalf("faulted: %v", err)
		}
	}
	if _, _, err := gh.Actions.ListOrganizationRunners(ctx(t), "acme", nil); err != nil {
		t.Fatal(err)
	}

	reset := time.Now().Add(time.Hour).Unix()
	e.srv.SetFault(func(r *http.Request) (int, http.Header, bool) {
		return 403, http.Header{"X-RateLimit-Remaining": {"0"}, "X-RateLimit-Reset": {strconv.FormatInt(reset, 10)}}, true
	})
	_, _, err := gh.Actions.ListOrganizationRunners(ctx(t), "acme", nil)
	var rl *github.RateLimitError
	if !errors.As(err, &rl) || rl.Rate.Reset.Unix() != reset {
		t.Fatalf("rate limited: %v", err)
	}
	e.srv.SetFault(func(r *http.Request) (int, http.Header, bool) {
		if strings.HasSuffix(r.URL.Path, "/access_tokens") {
			return 0, nil, false
		}
		return 403, http.Header{"Retry-After": {"30"}}, true
	})
	gh = e.gh() // go-github remembers the primary limit; use a fresh client
	_, _, err = gh.Actions.ListOrganizationRunners(ctx(t), "acme", nil)
	var abuse *github.AbuseRateLimitError
	if !errors.As(err, &abuse) || abuse.GetRetryAfter() != 30*time.Second {
		t.Fatalf("secondary rate limit: %v", err)
	}
	e.srv.SetFault(nil)
	if got := e.srv.Requests(); got["GET /orgs/{org}/actions/runners"] != 5 || got["POST /app/installations/{id}/access_tokens"] != 2 {
		t.Fatalf("requests: %v", got)
	}
}

func TestPathPrefixAndRunnerURL(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.PathPrefix = "/api/v3/"; o.RunnerURL = "http://127.0.0.1:1/" })
	if !strings.HasSuffix(e.srv.URL(), "/api/v3/") {
		t.Fatalf("url %s", e.srv.URL())
	}
	cfg := e.jit("p", "linux")
	dec, err := DecodeJITConfig(cfg.GetEncodedJITConfig())
	if err != nil || dec.URL != "http://127.0.0.1:1/" {
		t.Fatalf("decoded %+v %v", dec, err)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Options{AppID: 5}); err == nil || !strings.Contains(err.Error(), "AppID") || !strings.Contains(err.Error(), "AppPublicKey") {
		t.Fatalf("New(AppID without its key): %v", err)
	}
	// No App at all: the manifest flow makes one.
	s, err := New(Options{})
	if err != nil {
		t.Fatalf("New without an App: %v", err)
	}
	s.Close()
}

// As on GitHub, a runner group takes jobs of public repositories only when
// it allows them.
func TestPublicJobsNeedAGroupThatAllowsThem(t *testing.T) {
	for _, allow := range []bool{false, true} {
		t.Run(fmt.Sprintf("allows_public=%v", allow), func(t *testing.T) {
			e := newEnv(t, func(o *Options) {
				if allow {
					o.PublicRunnerGroups = []string{"Default"}
				}
			})
			pub := e.srv.QueueJob(JobSpec{Labels: []string{"linux"}, Repo: "acme/pub", Public: true, Duration: 10 * time.Millisecond})
			priv := e.srv.QueueJob(JobSpec{Labels: []string{"linux"}, Repo: "acme/priv", Duration: 10 * time.Millisecond})
			done, _ := startRunner(t, e.jit("r1", "linux").GetEncodedJITConfig())
			want := priv
			if allow {
				want = pub // the oldest job it may take
			}
			j, err := e.srv.WaitJob(ctx(t), want, func(j JobView) bool { return j.Status == StatusCompleted })
			if err != nil || j.RunnerName != "r1" {
				t.Fatalf("job %d: %+v %v", want, j, err)
			}
			if err := result(t, done); err != nil {
				t.Fatal(err)
			}
			other := pub
			if allow {
				other = priv
			}
			if j, _ := e.srv.Job(other); j.Status != StatusQueued {
				t.Fatalf("job %d is %s, want still queued", other, j.Status)
			}
		})
	}
}

// A busy runner that goes silent (its instance died) fails its job, as
// GitHub fails a job whose runner lost communication.
func TestLostRunnerFailsItsJob(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.RunnerLostAfter = 300 * time.Millisecond })
	id := e.srv.QueueJob(JobSpec{Labels: []string{"linux"}, Repo: "acme/a", Duration: time.Hour})
	_, kill := startRunner(t, e.jit("doomed", "linux").GetEncodedJITConfig())
	if _, err := e.srv.WaitJob(ctx(t), id, func(j JobView) bool { return j.Status == StatusInProgress }); err != nil {
		t.Fatal(err)
	}
	kill()
	j, err := e.srv.WaitJob(ctx(t), id, func(j JobView) bool { return j.Status == StatusCompleted })
	if err != nil || j.Conclusion != ConclusionFailure {
		t.Fatalf("job = %+v, %v; want completed as failure", j, err)
	}
	if len(e.srv.Runners()) != 0 {
		t.Fatal("the lost runner's record is still there")
	}
}
