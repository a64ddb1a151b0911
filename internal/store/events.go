package store

import (
	"fmt"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// AddEvent appends to a job's timeline. Job id 0 (a warm pool's runner) is
// not recorded.
func (t *Tx) AddEvent(jobID int64, at time.Time, kind, detail string) error {
	if jobID == 0 {
		return nil
	}
	_, err := t.exec(`INSERT INTO job_events (job_id, at, kind, detail) VALUES (?, ?, ?, ?)`,
		jobID, ms(at), kind, detail)
	if err != nil {
		return fmt.Errorf("add event to job %d: %w", jobID, err)
	}
	return nil
}

// Events returns a job's timeline, oldest first.
func (t *Tx) Events(jobID int64) ([]fleet.Event, error) {
	rows, err := t.query(`SELECT job_id, at, kind, detail FROM job_events WHERE job_id = ? ORDER BY id`, jobID)
	return collect(fmt.Sprintf("job %d events", jobID), rows, err, func(row scanner) (fleet.Event, error) {
		var e fleet.Event
		var at int64
		err := row.Scan(&e.JobID, &at, &e.Kind, &e.Detail)
		e.At = fromMS(at)
		return e, err
	})
}

// Prune deletes what is older than before and no longer needed: finished
// jobs and their timelines, applied deliveries (GitHub redelivers for three
// days at most), and ended runners. It reports the rows deleted.
func (t *Tx) Prune(before time.Time) (int64, error) {
	var n int64
	cut := ms(before)
	for _, q := range []string{
		`DELETE FROM job_events WHERE at < ?`,
		`DELETE FROM jobs WHERE state IN ('completed', 'ignored', 'abandoned') AND queued_at < ?`,
		`DELETE FROM deliveries WHERE applied = 1 AND received_at < ?`,
		`DELETE FROM runners WHERE state IN ('deleted', 'failed') AND created_at < ?`,
	} {
		res, err := t.exec(q, cut)
		if err != nil {
			return n, fmt.Errorf("prune: %w", err)
		}
		m, _ := res.RowsAffected()
		n += m
	}
	return n, nil
}
