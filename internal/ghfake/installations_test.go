package ghfake

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-github/v62/github"
)

// An installation added while the stand-in runs: its installation webhook
// is sent as GitHub sends it, it is listed, its token serves its own
// organization only, and its jobs go to its own runners only; suspended
// it gets no token, removed it is no longer listed.
func TestInstallationAddedWhileRunning(t *testing.T) {
	e := newEnv(t, nil)
	id, err := e.srv.AddInstallation("beta")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.AddInstallation("BETA"); err == nil {
		t.Fatal("a second installation on beta: no error")
	}
	event := func(action string) github.InstallationEvent {
		t.Helper()
		var got github.InstallationEvent
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			for _, r := range e.sink.all() {
				if r.event == "installation" && json.Unmarshal(r.body, &got) == nil && got.GetAction() == action {
					return got
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("no installation webhook with action %s", action)
		return got
	}
	ev := event("created")
	if in := ev.GetInstallation(); in.GetID() != id || in.GetAccount().GetLogin() != "beta" || in.GetAccount().GetType() != "Organization" ||
		in.GetAppID() != 42 || ev.GetSender().GetLogin() == "" {
		t.Fatalf("installation webhook = %+v", ev)
	}
	if e.sink.bad > 0 {
		t.Fatal("a webhook with a bad signature")
	}

	ins, _, err := e.appGH().Apps.ListInstallations(ctx(t), nil)
	if err != nil || len(ins) != 2 || ins[0].GetAccount().GetLogin() != "acme" || ins[1].GetID() != id || ins[1].GetAccount().GetLogin() != "beta" {
		t.Fatalf("installations = %v, %v; want acme then beta", ins, err)
	}
	tok, _, err := e.appGH().Apps.CreateInstallationToken(ctx(t), id, nil)
	if err != nil {
		t.Fatal(err)
	}
	auth := "token " + tok.GetToken()
	if code, _ := do(t, "GET", e.srv.URL()+"orgs/beta/actions/runners", auth, nil); code != http.StatusOK {
		t.Fatalf("beta's token on beta: %d", code)
	}
	if code, _ := do(t, "GET", e.srv.URL()+"orgs/acme/actions/runners", auth, nil); code != http.StatusUnauthorized {
		t.Fatalf("beta's token on acme: %d, want 401", code)
	}

	// A runner of acme's does not take beta's job, nor the other way round.
	acme := e.jit("acme-1", "self-hosted")
	code, body := do(t, "POST", e.srv.URL()+"orgs/beta/actions/runners/generate-jitconfig", auth,
		map[string]any{"name": "beta-1", "runner_group_id": 1, "labels": []string{"self-hosted"}})
	if code != http.StatusCreated {
		t.Fatalf("beta's JIT config: %d %s", code, body)
	}
	var betaJIT github.JITRunnerConfig
	if err := json.Unmarshal(body, &betaJIT); err != nil {
		t.Fatal(err)
	}
	for _, r := range e.srv.Runners() {
		if want := map[string]string{"acme-1": "acme", "beta-1": "beta"}[r.Name]; r.Org != want {
			t.Fatalf("runner %s in %q, want %q", r.Name, r.Org, want)
		}
	}
	betaJob := e.srv.QueueJob(JobSpec{Labels: []string{"self-hosted"}, Repo: "beta/app", Duration: time.Millisecond})
	done, cancel := startRunner(t, acme.GetEncodedJITConfig())
	defer cancel()
	time.Sleep(300 * time.Millisecond)
	if j, _ := e.srv.Job(betaJob); j.Status != StatusQueued {
		t.Fatalf("beta's job taken by %s, a runner of acme", j.RunnerName)
	}
	doneB, cancelB := startRunner(t, betaJIT.GetEncodedJITConfig())
	defer cancelB()
	if err := <-doneB; err != nil {
		t.Fatal(err)
	}
	if j, _ := e.srv.Job(betaJob); j.RunnerName != "beta-1" || j.Status != StatusCompleted {
		t.Fatalf("beta's job = %+v, want completed on beta-1", j)
	}
	cancel()
	<-done
	// Its workflow_job webhooks name beta's organization and installation.
	for _, r := range e.sink.forJob(betaJob) {
		var wj github.WorkflowJobEvent
		if err := json.Unmarshal(r.body, &wj); err != nil || wj.GetOrg().GetLogin() != "beta" || wj.GetInstallation().GetID() != id {
			t.Fatalf("beta's job webhook: org %q installation %d, %v", wj.GetOrg().GetLogin(), wj.GetInstallation().GetID(), err)
		}
	}

	if err := e.srv.SuspendInstallation(id, true); err != nil {
		t.Fatal(err)
	}
	event("suspend")
	if _, resp, err := e.appGH().Apps.CreateInstallationToken(ctx(t), id, nil); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a suspended installation's token: %v", err)
	}
	if err := e.srv.SuspendInstallation(id, false); err != nil {
		t.Fatal(err)
	}
	event("unsuspend")
	if err := e.srv.RemoveInstallation(id); err != nil {
		t.Fatal(err)
	}
	event("deleted")
	if ins, _, err := e.appGH().Apps.ListInstallations(ctx(t), nil); err != nil || len(ins) != 1 {
		t.Fatalf("installations after the removal = %v, %v; want acme's only", ins, err)
	}
	if _, _, err := e.appGH().Apps.CreateInstallationToken(ctx(t), id, nil); err == nil {
		t.Fatal("a removed installation's token: no error")
	}
}
