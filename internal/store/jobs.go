package store

import (
	"database/sql"
	"errors"
	"fmt"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

const jobColumns = `id, run_id, installation_id, org, repo, labels, pool, state, reason,
	runner_name, conclusion, delivery_id, queued_at, started_at, completed_at, attempts`

func scanJob(row scanner) (fleet.Job, error) {
	var j fleet.Job
	var labels string
	var queued, started, completed int64
	err := row.Scan(&j.ID, &j.RunID, &j.InstallationID, &j.Org, &j.Repo, &labels, &j.Pool, &j.State,
		&j.Reason, &j.RunnerName, &j.Conclusion, &j.DeliveryID, &queued, &started, &completed, &j.Attempts)
	if err != nil {
		return fleet.Job{}, err
	}
	j.Labels = decodeLabels(labels)
	j.QueuedAt, j.StartedAt, j.CompletedAt = fromMS(queued), fromMS(started), fromMS(completed)
	return j, nil
}

// Job returns the job with the given id, or an error matching fleet.ErrNotFound.
func (t *Tx) Job(id int64) (fleet.Job, error) {
	j, err := scanJob(t.queryRow(qJobByID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return fleet.Job{}, fmt.Errorf("job %d: %w", id, fleet.ErrNotFound)
	}
	if err != nil {
		return fleet.Job{}, fmt.Errorf("job %d: %w", id, err)
	}
	return j, nil
}

// PutJob inserts or replaces a job.
func (t *Tx) PutJob(j fleet.Job) error {
	_, err := t.exec(qPutJob,
		j.ID, j.RunID, j.InstallationID, j.Org, j.Repo, encodeLabels(j.Labels), j.Pool, j.State, j.Reason,
		j.RunnerName, j.Conclusion, j.DeliveryID, ms(j.QueuedAt), ms(j.StartedAt), ms(j.CompletedAt), j.Attempts)
	if err != nil {
		return fmt.Errorf("put job %d: %w", j.ID, err)
	}
	return nil
}

// QueuedJobs returns the jobs waiting for a runner, oldest first (FIFO).
func (t *Tx) QueuedJobs() ([]fleet.Job, error) {
	return t.jobs(qQueuedJobs, fleet.JobQueued)
}

// Jobs lists jobs newest first, filtered by pool and state when set.
func (t *Tx) Jobs(f fleet.JobFilter) ([]fleet.Job, error) {
	return t.jobs(`SELECT `+jobColumns+` FROM jobs
		WHERE (? = '' OR pool = ?) AND (? = '' OR state = ?)
		ORDER BY queued_at DESC, id DESC LIMIT ?`, f.Pool, f.Pool, f.State, f.State, limit(f.Limit))
}

// JobByRunner returns the latest job that ran on the named runner, or an
// error matching fleet.ErrNotFound.
func (t *Tx) JobByRunner(name string) (fleet.Job, error) {
	jobs, err := t.jobs(`SELECT `+jobColumns+` FROM jobs WHERE runner_name = ? ORDER BY id DESC LIMIT 1`, name)
	if err != nil {
		return fleet.Job{}, err
	}
	if len(jobs) == 0 {
		return fleet.Job{}, fmt.Errorf("job of runner %s: %w", name, fleet.ErrNotFound)
	}
	return jobs[0], nil
}

func (t *Tx) jobs(query string, args ...any) ([]fleet.Job, error) {
	rows, err := t.query(query, args...)
	return collect("list jobs", rows, err, scanJob)
}

// JobOrgs returns the organizations whose jobs were routed to a pool.
func (t *Tx) JobOrgs() ([]fleet.Org, error) {
	rows, err := t.query(`SELECT DISTINCT installation_id, org FROM jobs WHERE pool != '' ORDER BY org`)
	return collect("job orgs", rows, err, scanOrg)
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
