package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

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
	// among them, which would block a takeover for as long as the freeze.
	for k, v := range map[string]string{
		"idle_in_transaction_session_timeout": "10s",
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
	s, err := open(ctx, db, postgres{}, opts)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open state %s: %w", where, err)
	}
	return s, nil
}

// postgres is the dialect for several replicas on one database.
type postgres struct{}

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
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func (d postgres) record(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	return d.update(ctx, db, fn)
}
