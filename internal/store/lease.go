package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// Leases are the leadership of several replicas on one PostgreSQL
// database: a single lease row (holder, epoch, expiry by the database's
// clock). Only a PostgreSQL store has them; on SQLite the one process
// always leads.
func (s *Store) Leases() (*Leases, error) {
	if _, ok := s.d.(postgres); !ok {
		return nil, errors.New("leases need a shared database (PostgreSQL)")
	}
	return &Leases{s: s}, nil
}

// Leases takes, renews and gives up the lease row.
type Leases struct{ s *Store }

// leaseLockTimeout bounds a wait for the lease row's lock, so that a
// campaign or a renewal behind a stuck transaction fails fast rather
// than computing an expiry from a stale start (the reason expiries use
// clock_timestamp(), not now()).
const leaseLockTimeout = "1s"

// TryLead takes the lease for holder when it is free or has expired, for
// ttl, under a new epoch. ok is false when another replica holds it.
func (l *Leases) TryLead(ctx context.Context, holder string, ttl time.Duration) (epoch int64, ok bool, err error) {
	err = l.tx(ctx, func(tx *sql.Tx) error {
		// FOR UPDATE waits for the transactions of the leader that are
		// under way (they hold the row FOR KEY SHARE; see Fence), so a
		// new term cannot begin while an old one still writes. A plain
		// UPDATE would not: it takes the weaker lock a renewal takes.
		if _, err := tx.ExecContext(ctx, `SELECT 1 FROM leader_lease WHERE id = 1 FOR UPDATE`); err != nil {
			return err
		}
		err := tx.QueryRowContext(ctx, `UPDATE leader_lease
			SET holder = $1, epoch = epoch + 1, acquired_at = clock_timestamp(),
				expires_at = clock_timestamp() + $2 * interval '1 millisecond'
			WHERE id = 1 AND expires_at < clock_timestamp()
			RETURNING epoch`, holder, ttl.Milliseconds()).Scan(&epoch)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		ok = err == nil
		return err
	})
	if err != nil {
		return 0, false, fmt.Errorf("take the lease: %w", err)
	}
	return epoch, ok, nil
}

// Renew extends holder's lease of epoch by ttl from now; fleet.ErrNotLeader
// when it was lost (expired, or taken by another replica).
func (l *Leases) Renew(ctx context.Context, holder string, epoch int64, ttl time.Duration) error {
	err := l.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE leader_lease
			SET expires_at = clock_timestamp() + $3 * interval '1 millisecond'
			WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at > clock_timestamp()`,
			holder, epoch, ttl.Milliseconds())
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return errors.Join(fleet.ErrNotLeader, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("renew the lease: %w", err)
	}
	return nil
}

// Resign gives the lease up at once, so that a follower need not wait for
// it to expire: a clean shutdown of the leader.
func (l *Leases) Resign(ctx context.Context, holder string, epoch int64) error {
	return l.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE leader_lease SET expires_at = '-infinity'
			WHERE id = 1 AND holder = $1 AND epoch = $2`, holder, epoch)
		return err
	})
}

// Leader is who leads, as the database sees it now.
type Leader struct {
	Holder  string
	Epoch   int64
	Since   time.Time
	Expires time.Time
	Valid   bool // the lease has not expired
}

// Leader reads the lease row.
func (l *Leases) Leader(ctx context.Context) (Leader, error) {
	var ld Leader
	var since, expires sql.NullTime
	err := l.s.db.QueryRowContext(ctx, `SELECT holder, epoch,
			CASE WHEN acquired_at = '-infinity' THEN NULL ELSE acquired_at END,
			CASE WHEN expires_at = '-infinity' THEN NULL ELSE expires_at END,
			expires_at > clock_timestamp()
		FROM leader_lease WHERE id = 1`).Scan(&ld.Holder, &ld.Epoch, &since, &expires, &ld.Valid)
	if err != nil {
		return Leader{}, fmt.Errorf("read the lease: %w", err)
	}
	ld.Since, ld.Expires = since.Time.UTC(), expires.Time.UTC()
	return ld, nil
}

func (l *Leases) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := l.s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SET LOCAL lock_timeout = '`+leaseLockTimeout+`'`); err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// Fence is a view of the store for the leader: every Update first checks,
// in the same transaction, that the lease still belongs to holder under
// the epoch set last, and holds the lease row FOR KEY SHARE until it
// commits, so a takeover (FOR UPDATE) waits for it. A renewal (a plain
// UPDATE) does not: the leader's own busy transactions must never make
// its lease lapse. A stale leader's write fails with
// fleet.ErrNotLeader and changes nothing. Reads and recorded deliveries
// pass through.
type Fence struct {
	*Store
	holder string
	epoch  atomic.Int64 // 0: not leading
}

// Fence returns the fenced view for holder; SetEpoch arms it.
func (s *Store) Fence(holder string) *Fence { return &Fence{Store: s, holder: holder} }

// SetEpoch sets the epoch writes are checked against (0: refuse all).
func (f *Fence) SetEpoch(epoch int64) { f.epoch.Store(epoch) }

// Update runs fn in one write transaction if this replica still leads.
func (f *Fence) Update(ctx context.Context, fn func(fleet.Tx) error) error {
	epoch := f.epoch.Load()
	return f.Store.Update(ctx, func(tx fleet.Tx) error {
		var held bool
		err := tx.(*Tx).tx.QueryRowContext(ctx, `SELECT holder = $1 AND epoch = $2 AND expires_at > clock_timestamp()
			FROM leader_lease WHERE id = 1 FOR KEY SHARE`, f.holder, epoch).Scan(&held)
		if err != nil {
			return fmt.Errorf("check the lease: %w", err)
		}
		if !held {
			return fmt.Errorf("epoch %d: %w", epoch, fleet.ErrNotLeader)
		}
		return fn(tx)
	})
}
