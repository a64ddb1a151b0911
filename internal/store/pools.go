package store

import (
	"context"
	"fmt"
)

// SetDrained marks a pool drained (no launches) or not.
func (s *Store) SetDrained(ctx context.Context, pool string, drained bool) error {
	q := `DELETE FROM drained_pools WHERE name = ?`
	if drained {
		q = `INSERT INTO drained_pools (name) VALUES (?) ON CONFLICT (name) DO NOTHING`
	}
	if _, err := s.db.ExecContext(ctx, q, pool); err != nil {
		return fmt.Errorf("drain pool %s: %w", pool, err)
	}
	return nil
}

// Drained returns the drained pools.
func (t *Tx) Drained() (map[string]bool, error) {
	rows, err := t.tx.QueryContext(t.ctx, `SELECT name FROM drained_pools`)
	if err != nil {
		return nil, fmt.Errorf("drained pools: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("drained pools: %w", err)
		}
		out[n] = true
	}
	return out, rows.Err()
}

// JobsWhere lists jobs newest first, filtered by pool and state when set.
func (s *Store) JobsWhere(ctx context.Context, pool, state string, limit int) ([]Job, error) {
	var out []Job
	err := s.View(ctx, func(tx *Tx) error {
		var err error
		out, err = tx.jobs(`SELECT `+jobColumns+` FROM jobs
			WHERE (? = '' OR pool = ?) AND (? = '' OR state = ?)
			ORDER BY queued_at DESC, id DESC LIMIT ?`, pool, pool, state, state, limit)
		return err
	})
	return out, err
}

// Snapshot is a consistent read of what the status views need.
type Snapshot struct {
	Queued  []Job
	Live    []Runner
	Drained map[string]bool
}

// Snapshot reads the queued jobs, live runners and drained pools at once.
func (s *Store) Snapshot(ctx context.Context) (Snapshot, error) {
	var out Snapshot
	err := s.View(ctx, func(tx *Tx) error {
		var err error
		if out.Queued, err = tx.QueuedJobs(); err != nil {
			return err
		}
		if out.Live, err = tx.LiveRunners(); err != nil {
			return err
		}
		out.Drained, err = tx.Drained()
		return err
	})
	return out, err
}
