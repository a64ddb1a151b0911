package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// ValidatePostgresURL checks the database setting: a PostgreSQL URL, one
// host or several (with target_session_attrs=read-write to follow a
// failover), and no password in it: that comes from
// database_password_file or PostgreSQL's own PGPASSFILE. Its errors never
// repeat the URL, which may hold one.
func ValidatePostgresURL(url string) error {
	rest, ok := strings.CutPrefix(url, "postgres://")
	if !ok {
		rest, ok = strings.CutPrefix(url, "postgresql://")
	}
	if !ok {
		return errors.New("database: want a postgres:// URL")
	}
	if host, _, _ := strings.Cut(rest, "/"); strings.Contains(host, "@") {
		user := host[:strings.LastIndex(host, "@")]
		if strings.Contains(user, ":") {
			return errors.New("database: the URL holds a password: put it in database_password_file instead")
		}
	}
	if _, err := pgx.ParseConfig(url); err != nil {
		return errors.New("database: not a valid PostgreSQL URL")
	}
	return nil
}

// OpenPostgres connects to the PostgreSQL database at url and migrates it.
// password, when set, replaces the URL's (which should have none: the
// config file names a password file instead); otherwise PostgreSQL's own
// PGPASSFILE or ~/.pgpass applies. A multi-host URL with
// target_session_attrs=read-write follows a failover to the new primary.
func OpenPostgres(ctx context.Context, url, password string, opts Options) (*Store, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		// pgx's message may quote the URL, password and all.
		return nil, errors.New("open state: database is not a valid PostgreSQL URL")
	}
	if password != "" {
		cfg.Password = password // every host of a multi-host URL uses it
	}
	// A transaction left open by a process that froze (SIGSTOP, a long
	// pause) holds its locks until the server ends it: the lease row's
	// among them, which blocks a takeover for as long as the freeze. The
	// server ends it after the lease time (leader.DefaultTTL), so that a
	// follower takes over while the leader is frozen; at 10 s a leader
	// stopped for twice its lease was not replaced, and led again when it
	// woke. No transaction of ours waits on anything but the database.
	for k, v := range map[string]string{
		"idle_in_transaction_session_timeout": "3s",
		"application_name":                    "lxd-gha-autoscaler",
	} {
		if _, ok := cfg.RuntimeParams[k]; !ok {
			cfg.RuntimeParams[k] = v
		}
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(8)
	db.SetConnMaxLifetime(30 * time.Minute)
	where := fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
	s, err := open(ctx, db, postgres{cfg: cfg}, opts)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open state %s: %w", where, err)
	}
	return s, nil
}

// Listen calls wake whenever a replica (this one included) records fresh
// deliveries, until ctx ends. It holds a connection of its own and
// reconnects after a failure; wake must not block. On SQLite it only
// waits for ctx: there the one process wakes its scheduler itself.
func (s *Store) Listen(ctx context.Context, wake func()) error {
	pg, ok := s.d.(postgres)
	if !ok {
		<-ctx.Done()
		return nil
	}
	for failures := 0; ctx.Err() == nil; {
		err := pg.listen(ctx, wake)
		if ctx.Err() != nil {
			break
		}
		failures++
		// Deliveries recorded while nobody listened are still pending; the
		// scheduler's own tick finds them, and a wake-up costs nothing.
		wake()
		_ = fleet.Sleep(ctx, fleet.WallClock, fleet.Backoff(failures, 250*time.Millisecond, 5*time.Second))
		_ = err // the next attempt tells; readiness reports a lost database
	}
	return nil
}

func (pg postgres) listen(ctx context.Context, wake func()) error {
	conn, err := pgx.ConnectConfig(ctx, pg.cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		return err
	}
	wake() // whatever arrived before we listened
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		wake()
	}
}

// postgres is the dialect for several replicas on one database.
type postgres struct {
	cfg *pgx.ConnConfig // for the listener's own connection
}

// channel is where a replica that recorded fresh deliveries tells the
// leader, so that it need not poll.
const channel = "lxd_gha_deliveries"

// insert stores the whole batch in one statement: over a network, a round
// trip per delivery would cost more than the rest of the batch. The ids
// it returns are those of the rows it inserted; a duplicate within the
// batch is fresh only the first time.
func (postgres) insert(ctx context.Context, tx *sql.Tx, _ *sql.Stmt, batch []writeReq) ([]bool, error) {
	const cols = 12
	var q strings.Builder
	q.WriteString(`INSERT INTO deliveries
		(delivery_id, action, job_id, run_id, installation_id, org, repo, public, labels, runner_name, conclusion, received_at)
		VALUES `)
	args := make([]any, 0, cols*len(batch))
	for i, r := range batch {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(")
		for c := range cols {
			if c > 0 {
				q.WriteString(", ")
			}
			q.WriteString("$" + strconv.Itoa(i*cols+c+1))
		}
		q.WriteString(")")
		args = append(args, deliveryArgs(r.d)...)
	}
	q.WriteString(" ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id")
	rows, err := tx.QueryContext(ctx, q.String(), args...)
	ids, err := collect("insert deliveries", rows, err, func(row scanner) (string, error) {
		var id string
		return id, row.Scan(&id)
	})
	if err != nil {
		return nil, err
	}
	inserted := make(map[string]bool, len(ids))
	for _, id := range ids {
		inserted[id] = true
	}
	fresh := make([]bool, len(batch))
	for i, r := range batch {
		fresh[i] = inserted[r.d.DeliveryID]
		delete(inserted, r.d.DeliveryID) // a second copy in the batch is not new
	}
	return fresh, nil
}

// announce notifies channel; PostgreSQL delivers it when the transaction
// commits, and folds repeats within one transaction into one.
func (postgres) announce(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `SELECT pg_notify($1, '')`, channel)
	return err
}

func (postgres) name() string         { return "postgres" }
func (postgres) bind(q string) string { return dollarBind(q) }

// migrationLock serializes migrations of replicas that start together.
const migrationLock = 0x6c786467_6d696772 // "lxdgmigr"

// migrate applies each pending migration in its own transaction, under a
// transaction-scoped advisory lock, and records it in schema_version.
func (postgres) migrate(ctx context.Context, db *sql.DB, names []string) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("schema version table: %w", err)
	}
	for {
		done, err := migrateOne(ctx, db, names)
		if err != nil || done {
			return err
		}
	}
}

func migrateOne(ctx context.Context, db *sql.DB, names []string) (done bool, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
		return false, fmt.Errorf("migration lock: %w", err)
	}
	var version int
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_version`).Scan(&version); err != nil {
		return false, fmt.Errorf("read schema version: %w", err)
	}
	switch {
	case version > len(names):
		return false, fmt.Errorf("schema version %d is newer than this binary knows (%d): %w", version, len(names), errNewerSchema)
	case version == len(names):
		return true, nil
	}
	body, err := migrationFS.ReadFile(names[version])
	if err != nil {
		return false, err
	}
	if _, err := tx.ExecContext(ctx, string(body)); err != nil {
		return false, fmt.Errorf("migration %s: %w", names[version], err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES ($1)`, version+1); err != nil {
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("migration %s: %w", names[version], err)
	}
	return false, nil
}

// ping checks that the server answers and is a primary: a standby (after
// a failover the URL did not follow) answers but takes no writes.
func (postgres) ping(ctx context.Context, db *sql.DB) error {
	var standby bool
	if err := db.QueryRowContext(ctx, `SELECT pg_is_in_recovery()`).Scan(&standby); err != nil {
		return err
	}
	if standby {
		return errors.New("the database is a read-only standby")
	}
	return nil
}

func (postgres) update(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	return inTx(ctx, db, fn)
}

func (d postgres) record(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	return d.update(ctx, db, fn)
}
