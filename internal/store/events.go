package store

import (
	"context"
	"fmt"
	"time"
)

// Event is one step in a job's timeline.
type Event struct {
	JobID  int64
	At     time.Time
	Kind   string
	Detail string
}

// AddEvent appends to a job's timeline. Job id 0 (a warm pool's runner) is
// not recorded.
func (t *Tx) AddEvent(jobID int64, at time.Time, kind, detail string) error {
	if jobID == 0 {
		return nil
	}
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO job_events (job_id, at, kind, detail) VALUES (?, ?, ?, ?)`,
		jobID, ms(at), kind, detail)
	if err != nil {
		return fmt.Errorf("add event to job %d: %w", jobID, err)
	}
	return nil
}

// AddEvent appends to a job's timeline in its own transaction.
func (s *Store) AddEvent(ctx context.Context, jobID int64, at time.Time, kind, detail string) error {
	return s.Update(ctx, func(tx *Tx) error { return tx.AddEvent(jobID, at, kind, detail) })
}

// JobEvents returns a job's timeline, oldest first.
func (s *Store) JobEvents(ctx context.Context, jobID int64) ([]Event, error) {
	var out []Event
	err := s.View(ctx, func(tx *Tx) error {
		rows, err := tx.tx.QueryContext(ctx, `SELECT job_id, at, kind, detail FROM job_events WHERE job_id = ? ORDER BY id`, jobID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var e Event
			var at int64
			if err := rows.Scan(&e.JobID, &at, &e.Kind, &e.Detail); err != nil {
				return err
			}
			e.At = fromMS(at)
			out = append(out, e)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("job %d events: %w", jobID, err)
	}
	return out, nil
}

// JobByRunner returns the job that ran on the named runner, or ErrNotFound.
func (t *Tx) JobByRunner(name string) (Job, error) {
	jobs, err := t.jobs(`SELECT `+jobColumns+` FROM jobs WHERE runner_name = ? ORDER BY id DESC LIMIT 1`, name)
	if err != nil {
		return Job{}, err
	}
	if len(jobs) == 0 {
		return Job{}, ErrNotFound
	}
	return jobs[0], nil
}

// Prune deletes what is older than before and no longer needed: finished
// jobs and their timelines, applied deliveries (GitHub redelivers for three
// days at most), and ended runners. It reports the rows deleted.
func (s *Store) Prune(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.Update(ctx, func(tx *Tx) error {
		cut := ms(before)
		for _, q := range []string{
			`DELETE FROM job_events WHERE at < ?`,
			`DELETE FROM jobs WHERE state IN ('completed', 'ignored', 'abandoned') AND queued_at < ?`,
			`DELETE FROM deliveries WHERE applied = 1 AND received_at < ?`,
			`DELETE FROM runners WHERE state IN ('deleted', 'failed') AND created_at < ?`,
		} {
			res, err := tx.tx.ExecContext(ctx, q, cut)
			if err != nil {
				return err
			}
			m, _ := res.RowsAffected()
			n += m
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("prune: %w", err)
	}
	return n, nil
}
