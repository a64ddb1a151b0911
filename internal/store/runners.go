package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Runner states. launching, started, busy and deleting are live: the
// instance may exist and counts against the limits.
const (
	RunnerLaunching = "launching" // name chosen; JIT config and instance being made
	RunnerStarted   = "started"   // instance started; runner not known to have a job
	RunnerBusy      = "busy"      // an in_progress event named it
	RunnerDeleting  = "deleting"  // teardown decided; instance may still exist
	RunnerDeleted   = "deleted"
	RunnerFailed    = "failed" // launch failed and was cleaned up
)

// Runner is one runner instance we decided to launch.
type Runner struct {
	Name           string
	Pool           string
	InstallationID int64
	Org            string
	JobID          int64 // the queued job that caused the launch; not a binding
	RunnerID       int64 // GitHub's runner id, once the JIT config exists
	State          string
	Reason         string // why it was deleted or failed
	DeleteMode     string // how to tear it down; see the scheduler
	CreatedAt      time.Time
	StartedAt      time.Time
	OnlineAt       time.Time
	BusyAt         time.Time
	EndedAt        time.Time
}

// Live reports whether the runner's instance may exist.
func (r Runner) Live() bool {
	switch r.State {
	case RunnerLaunching, RunnerStarted, RunnerBusy, RunnerDeleting:
		return true
	}
	return false
}

const runnerColumns = `name, pool, installation_id, org, job_id, runner_id, state, reason, delete_mode,
	created_at, started_at, online_at, busy_at, ended_at`

func scanRunner(row scanner) (Runner, error) {
	var r Runner
	var created, started, online, busy, ended int64
	err := row.Scan(&r.Name, &r.Pool, &r.InstallationID, &r.Org, &r.JobID, &r.RunnerID, &r.State, &r.Reason,
		&r.DeleteMode, &created, &started, &online, &busy, &ended)
	if err != nil {
		return Runner{}, err
	}
	r.CreatedAt, r.StartedAt, r.OnlineAt = fromMS(created), fromMS(started), fromMS(online)
	r.BusyAt, r.EndedAt = fromMS(busy), fromMS(ended)
	return r, nil
}

// Runner returns the runner with the given name, or ErrNotFound.
func (t *Tx) Runner(name string) (Runner, error) {
	r, err := scanRunner(t.queryRow(qRunnerByName, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Runner{}, ErrNotFound
	}
	if err != nil {
		return Runner{}, fmt.Errorf("runner %s: %w", name, err)
	}
	return r, nil
}

// PutRunner inserts or replaces a runner.
func (t *Tx) PutRunner(r Runner) error {
	_, err := t.exec(qPutRunner,
		r.Name, r.Pool, r.InstallationID, r.Org, r.JobID, r.RunnerID, r.State, r.Reason, r.DeleteMode,
		ms(r.CreatedAt), ms(r.StartedAt), ms(r.OnlineAt), ms(r.BusyAt), ms(r.EndedAt))
	if err != nil {
		return fmt.Errorf("put runner %s: %w", r.Name, err)
	}
	return nil
}

// LiveRunners returns the runners whose instances may exist, oldest first.
func (t *Tx) LiveRunners() ([]Runner, error) {
	rows, err := t.query(qLiveRunners, RunnerDeleted, RunnerFailed)
	return collect("live runners", rows, err, scanRunner)
}

// Runners lists all runners, newest first, at most limit.
func (s *Store) Runners(ctx context.Context, limit int) ([]Runner, error) {
	var out []Runner
	err := s.View(ctx, func(tx *Tx) error {
		rows, err := tx.tx.QueryContext(ctx, `SELECT `+runnerColumns+` FROM runners
			ORDER BY created_at DESC, name DESC LIMIT ?`, limit)
		out, err = collect("list runners", rows, err, scanRunner)
		return err
	})
	return out, err
}

// Org is an organization reached through an installation of the App.
type Org struct {
	InstallationID int64
	Login          string
}

// Orgs returns the organizations we launched runners for.
func (t *Tx) Orgs() ([]Org, error) {
	rows, err := t.tx.QueryContext(t.ctx, `SELECT DISTINCT installation_id, org FROM runners ORDER BY org`)
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
