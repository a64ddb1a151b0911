package store

import (
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Job states.
const (
	JobQueued     = "queued"
	JobIgnored    = "ignored"
	JobInProgress = "in_progress"
	JobCompleted  = "completed"
	JobAbandoned  = "abandoned" // no runner came online for it, try after try
)

// Job is what we know and decided about one GitHub job.
type Job struct {
	ID             int64
	RunID          int64
	InstallationID int64
	Org            string
	Repo           string
	Labels         []string
	Pool           string // empty when ignored
	State          string
	Reason         string // why it was ignored
	RunnerName     string
	Conclusion     string
	DeliveryID     string // the delivery that first told us about it
	Attempts       int    // runners launched for it that never came online
	QueuedAt       time.Time
	StartedAt      time.Time
	CompletedAt    time.Time
}

const jobColumns = `id, run_id, installation_id, org, repo, labels, pool, state, reason,
	runner_name, conclusion, delivery_id, queued_at, started_at, completed_at, attempts`

func scanJob(row scanner) (Job, error) {
	var j Job
	var labels string
	var queued, started, completed int64
	err := row.Scan(&j.ID, &j.RunID, &j.InstallationID, &j.Org, &j.Repo, &labels, &j.Pool, &j.State,
		&j.Reason, &j.RunnerName, &j.Conclusion, &j.DeliveryID, &queued, &started, &completed, &j.Attempts)
	if err != nil {
		return Job{}, err
	}
	j.Labels = decodeLabels(labels)
	j.QueuedAt, j.StartedAt, j.CompletedAt = fromMS(queued), fromMS(started), fromMS(completed)
	return j, nil
}

// Job returns the job with the given id, or ErrNotFound.
func (t *Tx) Job(id int64) (Job, error) {
	j, err := scanJob(t.queryRow(qJobByID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Job{}, ErrNotFound
	}
	if err != nil {
		return Job{}, fmt.Errorf("job %d: %w", id, err)
	}
	return j, nil
}

// PutJob inserts or replaces a job.
func (t *Tx) PutJob(j Job) error {
	_, err := t.exec(qPutJob,
		j.ID, j.RunID, j.InstallationID, j.Org, j.Repo, encodeLabels(j.Labels), j.Pool, j.State, j.Reason,
		j.RunnerName, j.Conclusion, j.DeliveryID, ms(j.QueuedAt), ms(j.StartedAt), ms(j.CompletedAt), j.Attempts)
	if err != nil {
		return fmt.Errorf("put job %d: %w", j.ID, err)
	}
	return nil
}

// QueuedJobs returns the jobs waiting for a runner, oldest first (FIFO).
func (t *Tx) QueuedJobs() ([]Job, error) {
	return t.jobs(qQueuedJobs, JobQueued)
}

func (t *Tx) jobs(query string, args ...any) ([]Job, error) {
	rows, err := t.query(query, args...)
	return collect("list jobs", rows, err, scanJob)
}

const (
	qJobByID = `SELECT ` + jobColumns + ` FROM jobs WHERE id = ?`
	qPutJob  = `INSERT INTO jobs (` + jobColumns + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET state = excluded.state, reason = excluded.reason,
			pool = excluded.pool, runner_name = excluded.runner_name, conclusion = excluded.conclusion,
			started_at = excluded.started_at, completed_at = excluded.completed_at, attempts = excluded.attempts`
	qQueuedJobs = `SELECT ` + jobColumns + ` FROM jobs WHERE state = ? ORDER BY queued_at, id`
)

// JobOrgs returns the organizations whose jobs were routed to a pool.
func (t *Tx) JobOrgs() ([]Org, error) {
	rows, err := t.tx.QueryContext(t.ctx, `SELECT DISTINCT installation_id, org FROM jobs WHERE pool != '' ORDER BY org`)
	return collect("job orgs", rows, err, scanOrg)
}
