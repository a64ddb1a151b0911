package ghfake

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DeliveryView is one attempted webhook delivery, as the deliveries API
// shows it.
type DeliveryView struct {
	ID          int64
	GUID        string // X-GitHub-Delivery; shared by redeliveries
	Event       string // workflow_job, ping
	Action      string // queued, in_progress, completed; "" for ping
	JobID       int64
	Redelivery  bool
	DeliveredAt time.Time
	StatusCode  int // 0 when no HTTP answer came back
	Status      string
	Failed      bool // not answered with 2xx
	Dropped     bool // dropped by the DropWebhooks filter, never sent
}

type delivery struct {
	id             int64
	installationID int64 // 0: the one on Org
	guid           string
	event          string
	action         string
	jobID          int64
	repoID         int64
	payload        []byte
	redelivery     bool
	deliveredAt    time.Time
	duration       time.Duration
	statusCode     int
	status         string
	dropped        bool
}

func (d *delivery) failed() bool { return d.statusCode < 200 || d.statusCode > 299 }

func (d *delivery) view() DeliveryView {
	return DeliveryView{
		ID: d.id, GUID: d.guid, Event: d.event, Action: d.action, JobID: d.jobID, Redelivery: d.redelivery,
		DeliveredAt: d.deliveredAt, StatusCode: d.statusCode, Status: d.status, Failed: d.failed(), Dropped: d.dropped,
	}
}

func (d *delivery) api(installationID int64) apiDelivery {
	if d.installationID != 0 {
		installationID = d.installationID
	}
	a := apiDelivery{
		ID: d.id, GUID: d.guid, DeliveredAt: d.deliveredAt.UTC().Format(time.RFC3339), Redelivery: d.redelivery,
		Duration: d.duration.Seconds(), Status: d.status, StatusCode: d.statusCode, Event: d.event,
		InstallationID: installationID,
	}
	if d.action != "" {
		a.Action = &d.action
	}
	if d.repoID != 0 {
		a.RepositoryID = &d.repoID
	}
	return a
}

// Webhook payload shapes, as GitHub sends them (nulls included).
type hookUser struct {
	Login string `json:"login"`
	ID    int64  `json:"id"`
	Type  string `json:"type"`
}

type hookRepo struct {
	ID            int64    `json:"id"`
	NodeID        string   `json:"node_id"`
	Name          string   `json:"name"`
	FullName      string   `json:"full_name"`
	Private       bool     `json:"private"`
	Visibility    string   `json:"visibility"`
	Owner         hookUser `json:"owner"`
	HTMLURL       string   `json:"html_url"`
	DefaultBranch string   `json:"default_branch"`
}

type hookWorkflowJob struct {
	ID              int64    `json:"id"`
	RunID           int64    `json:"run_id"`
	RunAttempt      int64    `json:"run_attempt"`
	NodeID          string   `json:"node_id"`
	HeadSHA         string   `json:"head_sha"`
	HeadBranch      string   `json:"head_branch"`
	WorkflowName    string   `json:"workflow_name"`
	Name            string   `json:"name"`
	Status          string   `json:"status"`
	Conclusion      *string  `json:"conclusion"`
	Labels          []string `json:"labels"`
	RunnerID        *int64   `json:"runner_id"`
	RunnerName      *string  `json:"runner_name"`
	RunnerGroupID   *int64   `json:"runner_group_id"`
	RunnerGroupName *string  `json:"runner_group_name"`
	CreatedAt       *string  `json:"created_at"`
	StartedAt       *string  `json:"started_at"`
	CompletedAt     *string  `json:"completed_at"`
	HTMLURL         string   `json:"html_url"`
	RunURL          string   `json:"run_url"`
	URL             string   `json:"url"`
	CheckRunURL     string   `json:"check_run_url"`
	Steps           []any    `json:"steps"`
}

type hookOrg struct {
	Login  string `json:"login"`
	ID     int64  `json:"id"`
	NodeID string `json:"node_id"`
}

type hookInstallation struct {
	ID     int64  `json:"id"`
	NodeID string `json:"node_id"`
}

type workflowJobEvent struct {
	Action       string           `json:"action"`
	WorkflowJob  hookWorkflowJob  `json:"workflow_job"`
	Repository   hookRepo         `json:"repository"`
	Organization hookOrg          `json:"organization"`
	Installation hookInstallation `json:"installation"`
	Sender       hookUser         `json:"sender"`
}

// enqueueJobEventLocked snapshots j now, so the payload reflects the
// transition even if the job changes before the delivery goes out.
func (s *Server) enqueueJobEventLocked(j *job, action string) {
	org, orgID, instID := s.opts.Org, s.orgID, s.opts.InstallationID
	if in := s.installationOfLocked(j.org); in != nil {
		org, orgID, instID = in.org, in.orgID, in.id
	}
	ev := workflowJobEvent{
		Action:       action,
		WorkflowJob:  s.workflowJobLocked(j),
		Repository:   s.repoLocked(j.repo, j.repoID, j.public),
		Organization: hookOrg{Login: org, ID: orgID, NodeID: fmt.Sprintf("O_fake%d", orgID)},
		Installation: hookInstallation{ID: instID, NodeID: fmt.Sprintf("MDIz_fake%d", instID)},
		Sender:       hookUser{Login: "octocat", ID: 583231, Type: "User"},
	}
	payload, err := json.Marshal(ev)
	if err != nil { // cannot happen with these types
		s.log.Error().Err(err).Msg("encode webhook")
		return
	}
	s.enqueueLocked(&delivery{guid: newUUID(), event: "workflow_job", action: action, jobID: j.id, repoID: j.repoID,
		installationID: instID, payload: payload})
}

// repoLocked is a repository as webhooks and the REST API show it.
func (s *Server) repoLocked(fullName string, id int64, public bool) hookRepo {
	owner, name, ok := strings.Cut(fullName, "/")
	if !ok {
		owner, name = s.opts.Org, fullName
	}
	vis := "private"
	if public {
		vis = "public"
	}
	return hookRepo{
		ID: id, NodeID: fmt.Sprintf("R_fake%d", id), Name: name, FullName: fullName,
		Private: !public, Visibility: vis, Owner: hookUser{Login: owner, ID: s.orgID, Type: "Organization"},
		HTMLURL: "https://github.com/" + fullName, DefaultBranch: "main",
	}
}

// workflowJobLocked is a job as webhooks and the REST API show it.
func (s *Server) workflowJobLocked(j *job) hookWorkflowJob {
	wj := hookWorkflowJob{
		ID: j.id, RunID: j.runID, RunAttempt: 1, NodeID: fmt.Sprintf("CR_fake%d", j.id),
		HeadSHA: fmt.Sprintf("%040x", j.runID), HeadBranch: "main", WorkflowName: j.workflow, Name: j.name,
		Status: j.status, Labels: j.labels, Steps: []any{},
		CreatedAt: ts(j.createdAt), StartedAt: ts(j.createdAt), CompletedAt: ts(j.completedAt),
		HTMLURL:     fmt.Sprintf("https://github.com/%s/actions/runs/%d/job/%d", j.repo, j.runID, j.id),
		RunURL:      fmt.Sprintf("%srepos/%s/actions/runs/%d", s.url, j.repo, j.runID),
		URL:         fmt.Sprintf("%srepos/%s/actions/jobs/%d", s.url, j.repo, j.id),
		CheckRunURL: fmt.Sprintf("%srepos/%s/check-runs/%d", s.url, j.repo, j.id),
	}
	if !j.startedAt.IsZero() {
		wj.StartedAt = ts(j.startedAt)
	}
	if j.conclusion != "" {
		c := j.conclusion
		wj.Conclusion = &c
	}
	if r := j.runner; r != nil {
		id, rname, gid, gname := r.id, r.name, r.group.id, r.group.name
		wj.RunnerID, wj.RunnerName, wj.RunnerGroupID, wj.RunnerGroupName = &id, &rname, &gid, &gname
	}
	return wj
}

// Ping sends a ping event, as GitHub does when a hook is created.
func (s *Server) Ping() {
	s.mu.Lock()
	defer s.mu.Unlock()
	payload, _ := json.Marshal(map[string]any{
		"zen":     "Keep it logically awesome.",
		"hook_id": s.hookID,
		"hook": map[string]any{
			"type": "App", "id": s.hookID, "name": "web", "active": true, "events": []string{"workflow_job"},
			"app_id": s.currentAppIDLocked(),
			"config": map[string]string{"content_type": "json", "insecure_ssl": "0", "url": s.webhookURL},
		},
	})
	s.enqueueLocked(&delivery{guid: newUUID(), event: "ping", payload: payload})
}

func (s *Server) enqueueLocked(d *delivery) {
	s.next.delivery++
	d.id = s.next.delivery
	s.outbox = append(s.outbox, d)
	select {
	case s.outboxWake <- struct{}{}:
	default:
	}
}

func (s *Server) redeliverLocked(d *delivery) {
	s.enqueueLocked(&delivery{
		guid: d.guid, event: d.event, action: d.action, jobID: d.jobID, repoID: d.repoID,
		installationID: d.installationID, payload: d.payload, redelivery: true,
	})
}

// Redeliver resends the most recent attempt of delivery guid: same guid, same
// payload, as the deliveries API's redeliver does.
func (s *Server) Redeliver(guid string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.deliveries) - 1; i >= 0; i-- {
		if d := s.deliveries[i]; d.guid == guid {
			s.redeliverLocked(d)
			return nil
		}
	}
	return fmt.Errorf("ghfake: delivery %s: not found (not attempted yet?)", guid)
}

// Deliveries returns the attempted deliveries, oldest first.
func (s *Server) Deliveries() []DeliveryView {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deliveryViewsLocked()
}

func (s *Server) deliveryViewsLocked() []DeliveryView {
	out := make([]DeliveryView, 0, len(s.deliveries))
	for _, d := range s.deliveries {
		out = append(out, d.view())
	}
	return out
}

// WaitDeliveries blocks until cond holds for the attempted deliveries.
func (s *Server) WaitDeliveries(ctx context.Context, cond func([]DeliveryView) bool) error {
	_, err := waitFor(ctx, s, s.deliveryViewsLocked, cond)
	return err
}

// sendLoop delivers webhooks one at a time, in order, without retries.
func (s *Server) sendLoop() {
	for {
		s.mu.Lock()
		for len(s.outbox) == 0 {
			s.mu.Unlock()
			select {
			case <-s.outboxWake:
			case <-s.ctx.Done():
				return
			}
			s.mu.Lock()
		}
		d := s.outbox[0]
		s.outbox[0] = nil
		s.outbox = s.outbox[1:]
		target, drop, secret, appID := s.webhookURL, s.drop, s.secret, s.currentAppIDLocked()
		s.mu.Unlock()

		start := time.Now()
		switch {
		case !d.redelivery && drop != nil && drop(d.event, d.action, d.jobID):
			d.statusCode, d.status, d.dropped = http.StatusBadGateway, "Invalid HTTP Response: 502", true
		case target == "":
			d.statusCode, d.status = 0, "No webhook URL configured"
		default:
			d.statusCode, d.status = s.post(target, d, secret, appID)
		}
		if s.ctx.Err() != nil {
			return
		}
		d.deliveredAt, d.duration = start, time.Since(start)
		ev := s.log.Info()
		if d.failed() {
			ev = s.log.Warn()
		}
		ev.Int64("delivery_id", d.id).Str("guid", d.guid).Str("event", d.event).Str("action", d.action).
			Int64("job_id", d.jobID).Bool("redelivery", d.redelivery).Int("status_code", d.statusCode).
			Bool("dropped", d.dropped).Msg("webhook delivered")
		s.mu.Lock()
		s.deliveries = append(s.deliveries, d)
		s.notifyLocked()
		s.mu.Unlock()
	}
}

func (s *Server) post(target string, d *delivery, secret []byte, appID int64) (int, string) {
	req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, target, bytes.NewReader(d.payload))
	if err != nil {
		return 0, "Invalid webhook URL"
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "GitHub-Hookshot/fake")
	h.Set("X-GitHub-Event", d.event)
	h.Set("X-GitHub-Delivery", d.guid)
	h.Set("X-GitHub-Hook-ID", strconv.FormatInt(s.hookID, 10))
	h.Set("X-GitHub-Hook-Installation-Target-Type", "integration")
	h.Set("X-GitHub-Hook-Installation-Target-ID", strconv.FormatInt(appID, 10))
	if len(secret) > 0 {
		h.Set("X-Hub-Signature-256", "sha256="+mac(sha256.New, secret, d.payload))
		h.Set("X-Hub-Signature", "sha1="+mac(sha1.New, secret, d.payload))
	}
	resp, err := s.webhookClient.Do(req)
	if err != nil {
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			return 0, "timed out"
		}
		return 0, "failed to connect to host"
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return resp.StatusCode, "OK"
	}
	return resp.StatusCode, "Invalid HTTP Response: " + strconv.Itoa(resp.StatusCode)
}

func mac(h func() hash.Hash, key, msg []byte) string {
	m := hmac.New(h, key)
	m.Write(msg)
	return hex.EncodeToString(m.Sum(nil))
}
