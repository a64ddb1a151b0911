package store

import (
	"database/sql"
	"errors"
	"fmt"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

const runnerColumns = `name, pool, installation_id, org, job_id, runner_id, state, reason, delete_mode,
	created_at, started_at, online_at, busy_at, ended_at`

func scanRunner(row scanner) (fleet.Runner, error) {
	var r fleet.Runner
	var created, started, online, busy, ended int64
	err := row.Scan(&r.Name, &r.Pool, &r.InstallationID, &r.Org, &r.JobID, &r.RunnerID, &r.State, &r.Reason,
		&r.DeleteMode, &created, &started, &online, &busy, &ended)
	if err != nil {
		return fleet.Runner{}, err
	}
	r.CreatedAt, r.StartedAt, r.OnlineAt = fromMS(created), fromMS(started), fromMS(online)
	r.BusyAt, r.EndedAt = fromMS(busy), fromMS(ended)
	return r, nil
}

// Runner returns the runner with the given name, or an error matching
// fleet.ErrNotFound.
func (t *Tx) Runner(name string) (fleet.Runner, error) {
	r, err := scanRunner(t.queryRow(qRunnerByName, name))
	if errors.Is(err, sql.ErrNoRows) {
		return fleet.Runner{}, fmt.Errorf("runner %s: %w", name, fleet.ErrNotFound)
	}
	if err != nil {
		return fleet.Runner{}, fmt.Errorf("runner %s: %w", name, err)
	}
	return r, nil
}

// PutRunner inserts or replaces a runner.
func (t *Tx) PutRunner(r fleet.Runner) error {
	_, err := t.exec(qPutRunner,
		r.Name, r.Pool, r.InstallationID, r.Org, r.JobID, r.RunnerID, r.State, r.Reason, r.DeleteMode,
		ms(r.CreatedAt), ms(r.StartedAt), ms(r.OnlineAt), ms(r.BusyAt), ms(r.EndedAt))
	if err != nil {
		return fmt.Errorf("put runner %s: %w", r.Name, err)
	}
	return nil
}

// LiveRunners returns the runners whose instances may exist, oldest first.
func (t *Tx) LiveRunners() ([]fleet.Runner, error) {
	rows, err := t.query(qLiveRunners, fleet.RunnerDeleted, fleet.RunnerFailed)
	return collect("live runners", rows, err, scanRunner)
}

// Runners lists all runners, newest first, at most limit.
func (t *Tx) Runners(n int) ([]fleet.Runner, error) {
	rows, err := t.query(`SELECT `+runnerColumns+` FROM runners
		ORDER BY created_at DESC, name DESC LIMIT ?`, limit(n))
	return collect("list runners", rows, err, scanRunner)
}

// RunnerOrgs returns the organizations runners were launched for.
func (t *Tx) RunnerOrgs() ([]fleet.Org, error) {
	rows, err := t.query(`SELECT DISTINCT installation_id, org FROM runners ORDER BY org`)
	return collect("orgs", rows, err, scanOrg)
}

const (
	qRunnerByName = `SELECT ` + runnerColumns + ` FROM runners WHERE name = ?`
	qPutRunner    = `INSERT INTO runners (` + runnerColumns + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET runner_id = excluded.runner_id, state = excluded.state,
			reason = excluded.reason, delete_mode = excluded.delete_mode, started_at = excluded.started_at,
			online_at = excluded.online_at, busy_at = excluded.busy_at, ended_at = excluded.ended_at`
	qLiveRunners = `SELECT ` + runnerColumns + ` FROM runners
		WHERE state NOT IN (?, ?) ORDER BY created_at, name`
)
