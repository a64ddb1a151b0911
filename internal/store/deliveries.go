package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// ErrClosed is returned by Record once the store is closing.
var ErrClosed = errors.New("store closed")

type writeReq struct {
	d    fleet.Delivery
	done chan writeRes
}

type writeRes struct {
	fresh bool
	err   error
}

// Record stores a delivery durably and reports whether it was new (false
// for a delivery id seen before). It returns only after the commit, so an
// answered webhook survives kill -9. Concurrent calls share transactions
// (group commit): one fsync covers a whole batch.
func (s *Store) Record(ctx context.Context, d fleet.Delivery) (fresh bool, err error) {
	req := writeReq{d: d, done: make(chan writeRes, 1)}
	select {
	case s.writes <- req:
	case <-s.stop:
		return false, ErrClosed
	case <-ctx.Done():
		return false, ctx.Err()
	}
	// Once queued, wait for the answer even if ctx ends: the write may
	// commit, and the caller must not be told otherwise.
	res := <-req.done
	return res.fresh, res.err
}

func (s *Store) writer(maxBatch int) {
	defer close(s.done)
	batch := make([]writeReq, 0, maxBatch)
	for {
		batch = batch[:0]
		select {
		case r := <-s.writes:
			batch = append(batch, r)
		case <-s.stop:
			// Answer whatever is still queued, then stop.
			for {
				select {
				case r := <-s.writes:
					s.commit([]writeReq{r})
				default:
					return
				}
			}
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case r := <-s.writes:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		s.commit(batch)
	}
}

const insertDelivery = `INSERT INTO deliveries
	(delivery_id, action, job_id, run_id, installation_id, org, repo, public, labels, runner_name, conclusion, received_at)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (delivery_id) DO NOTHING`

func (s *Store) commit(batch []writeReq) {
	fresh := make([]bool, len(batch))
	err := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return s.d.record(ctx, s.db, func(tx *sql.Tx) error {
			var err error
			if fresh, err = s.d.insert(ctx, tx, s.stmts[insertDelivery], batch); err != nil {
				return err
			}
			if slices.Contains(fresh, true) {
				return s.d.announce(ctx, tx)
			}
			return nil
		})
	}()
	if err != nil {
		err = fmt.Errorf("record delivery: %w", err)
	}
	for i, r := range batch {
		r.done <- writeRes{fresh: fresh[i] && err == nil, err: err}
	}
}

// insertEach inserts a batch a row at a time through the prepared insert;
// fresh[i] says whether row i was new. For SQLite, in process, a statement
// costs microseconds.
func insertEach(ctx context.Context, tx *sql.Tx, insert *sql.Stmt, batch []writeReq) ([]bool, error) {
	stmt := tx.StmtContext(ctx, insert)
	defer stmt.Close()
	fresh := make([]bool, len(batch))
	for i, r := range batch {
		res, err := stmt.ExecContext(ctx, deliveryArgs(r.d)...)
		if err != nil {
			return nil, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return nil, err
		}
		fresh[i] = n == 1
	}
	return fresh, nil
}

func deliveryArgs(d fleet.Delivery) []any {
	return []any{d.DeliveryID, d.Action, d.JobID, d.RunID, d.InstallationID,
		d.Org, d.Repo, d.Public, encodeLabels(d.Labels), d.RunnerName, d.Conclusion, ms(d.ReceivedAt)}
}

// PendingDeliveries returns up to limit deliveries not yet applied, oldest first.
func (t *Tx) PendingDeliveries(limit int) ([]fleet.Delivery, error) {
	rows, err := t.query(qPendingDeliveries, limit)
	if err != nil {
		return nil, fmt.Errorf("pending deliveries: %w", err)
	}
	defer rows.Close()
	var out []fleet.Delivery
	for rows.Next() {
		var d fleet.Delivery
		var labels string
		var received int64
		if err := rows.Scan(&d.Seq, &d.DeliveryID, &d.Action, &d.JobID, &d.RunID, &d.InstallationID,
			&d.Org, &d.Repo, &d.Public, &labels, &d.RunnerName, &d.Conclusion, &received); err != nil {
			return nil, fmt.Errorf("pending deliveries: %w", err)
		}
		d.Labels = decodeLabels(labels)
		d.ReceivedAt = fromMS(received)
		out = append(out, d)
	}
	return out, rows.Err()
}

// MarkApplied marks a delivery as applied by the scheduler.
func (t *Tx) MarkApplied(seq int64) error {
	_, err := t.exec(qMarkApplied, seq)
	if err != nil {
		return fmt.Errorf("mark delivery %d applied: %w", seq, err)
	}
	return nil
}

// CountDeliveries returns how many deliveries are stored (for tests and status).
func (s *Store) CountDeliveries(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM deliveries`).Scan(&n)
	return n, err
}

const (
	qPendingDeliveries = `SELECT seq, delivery_id, action, job_id, run_id, installation_id,
		org, repo, public, labels, runner_name, conclusion, received_at
		FROM deliveries WHERE applied = 0 ORDER BY seq LIMIT ?`
	qMarkApplied = `UPDATE deliveries SET applied = 1 WHERE seq = ?`
)
