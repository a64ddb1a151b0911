// Package store keeps the service's durable state: accepted deliveries,
// what was decided for each job, the runners launched and each job's
// timeline. It satisfies fleet.State on SQLite (one host, the default)
// and on PostgreSQL (several replicas), with one set of queries and one
// set of migrations per dialect.
package store

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

var (
	_ fleet.State = (*Store)(nil)
	_ fleet.Tx    = (*Tx)(nil)
)

//go:embed migrations/*/*.sql
var migrationFS embed.FS

// Store is the state database.
type Store struct {
	closed sync.Once
	db     *sql.DB
	d      dialect
	stmts  map[string]*sql.Stmt // the hot queries, prepared once
	writes chan writeReq
	stop   chan struct{}
	done   chan struct{}
}

// Options tune durability; the zero value is the safe default.
type Options struct {
	// Synchronous is SQLite's synchronous pragma: "FULL" (default) survives
	// power loss; "NORMAL" in WAL mode survives a process crash only.
	// PostgreSQL's durability is the server's (synchronous_commit).
	Synchronous string
	// MaxBatch caps the deliveries committed in one transaction (default 512).
	MaxBatch int
}

// dialect is what differs between the two databases.
type dialect interface {
	name() string
	// bind rewrites a query's ? placeholders as the driver wants them.
	bind(q string) string
	// migrate applies the dialect's migrations in order, refusing a schema
	// newer than this binary.
	migrate(ctx context.Context, db *sql.DB, names []string) error
	// update runs fn in a write transaction that is durable on return.
	update(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error
	// record runs fn in the write transaction of a batch of deliveries,
	// durable on return.
	record(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error
	// ping checks that the database answers and takes writes.
	ping(ctx context.Context, db *sql.DB) error
	// insert stores a batch of deliveries in tx; fresh[i] says whether
	// the i-th was new (a delivery id seen before, in the database or
	// earlier in the batch, is not).
	insert(ctx context.Context, tx *sql.Tx, prepared *sql.Stmt, batch []writeReq) (fresh []bool, err error)
	// announce tells other processes, in the transaction that records
	// them, that fresh deliveries are pending.
	announce(ctx context.Context, tx *sql.Tx) error
}

func open(ctx context.Context, db *sql.DB, d dialect, opts Options) (*Store, error) {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 512
	}
	names, err := fs.Glob(migrationFS, "migrations/"+d.name()+"/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	if err := d.migrate(ctx, db, names); err != nil {
		return nil, err
	}
	stmts := map[string]*sql.Stmt{}
	for _, q := range []string{insertDelivery, qPendingDeliveries, qMarkApplied, qJobByID, qPutJob, qQueuedJobs,
		qRunnerByName, qPutRunner, qLiveRunners} {
		st, err := db.PrepareContext(ctx, d.bind(q))
		if err != nil {
			return nil, fmt.Errorf("prepare: %w", err)
		}
		stmts[q] = st
	}
	s := &Store{
		db: db, d: d, stmts: stmts,
		writes: make(chan writeReq, 4096),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go s.writer(opts.MaxBatch)
	return s, nil
}

// Close stops the writer (answering queued writes first) and closes the
// database. Closing twice is harmless.
func (s *Store) Close() error {
	err := errors.New("store already closed")
	s.closed.Do(func() {
		close(s.stop)
		<-s.done
		for _, st := range s.stmts {
			st.Close()
		}
		err = s.db.Close()
	})
	return err
}

// Ping checks that the database answers and takes writes.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.d.ping(ctx, s.db); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// Update runs fn in one write transaction, durable when it returns.
func (s *Store) Update(ctx context.Context, fn func(fleet.Tx) error) error {
	return s.d.update(ctx, s.db, func(tx *sql.Tx) error {
		return fn(&Tx{tx: tx, ctx: ctx, s: s})
	})
}

// View runs fn in a transaction that is rolled back: for reads.
func (s *Store) View(ctx context.Context, fn func(fleet.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: s.d.name() == "postgres"})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	return fn(&Tx{tx: tx, ctx: ctx, s: s})
}

// inTx runs fn in a transaction of b (the database, or one connection of
// it) and commits it; when fn fails, nothing of it is kept.
func inTx(ctx context.Context, b interface {
	BeginTx(context.Context, *sql.TxOptions) (*sql.Tx, error)
}, fn func(*sql.Tx) error) error {
	tx, err := b.BeginTx(ctx, nil)
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

// Tx is a transaction: fleet.Tx over the store's database.
type Tx struct {
	tx  *sql.Tx
	ctx context.Context
	s   *Store
}

// stmt returns q prepared on the transaction's connection: each hot query
// is parsed and planned once per Store instead of once per call.
func (t *Tx) stmt(q string) *sql.Stmt {
	if st, ok := t.s.stmts[q]; ok {
		return t.tx.StmtContext(t.ctx, st)
	}
	return nil
}

func (t *Tx) query(q string, args ...any) (*sql.Rows, error) {
	if st := t.stmt(q); st != nil {
		return st.QueryContext(t.ctx, args...)
	}
	return t.tx.QueryContext(t.ctx, t.s.d.bind(q), args...)
}

func (t *Tx) queryRow(q string, args ...any) *sql.Row {
	if st := t.stmt(q); st != nil {
		return st.QueryRowContext(t.ctx, args...)
	}
	return t.tx.QueryRowContext(t.ctx, t.s.d.bind(q), args...)
}

func (t *Tx) exec(q string, args ...any) (sql.Result, error) {
	if st := t.stmt(q); st != nil {
		return st.ExecContext(t.ctx, args...)
	}
	return t.tx.ExecContext(t.ctx, t.s.d.bind(q), args...)
}

// dollarBind turns ? placeholders into PostgreSQL's $1, $2, ...; queries
// here hold no ? inside string literals. Results are cached: the queries
// are a fixed set.
var dollarBinds sync.Map

func dollarBind(q string) string {
	if v, ok := dollarBinds.Load(q); ok {
		return v.(string)
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	dollarBinds.Store(q, b.String())
	return b.String()
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// noLimit stands for "all rows": both databases take a LIMIT this large.
const noLimit = 1 << 62

// limit turns "no limit" (0 or less) into noLimit.
func limit(n int) int64 {
	if n <= 0 {
		return noLimit
	}
	return int64(n)
}

func encodeLabels(labels []string) string {
	if labels == nil {
		labels = []string{}
	}
	b, _ := json.Marshal(labels) // []string always marshals
	return string(b)
}

func decodeLabels(s string) []string {
	var labels []string
	_ = json.Unmarshal([]byte(s), &labels) // written by encodeLabels
	return labels
}

type scanner interface{ Scan(...any) error }

// collect reads every row of a query with scan; what names the list in
// errors.
func collect[T any](what string, rows *sql.Rows, err error, scan func(scanner) (T, error)) ([]T, error) {
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

func scanOrg(row scanner) (fleet.Org, error) {
	var o fleet.Org
	err := row.Scan(&o.InstallationID, &o.Login)
	return o, err
}

// errNewerSchema is returned when the database was migrated by a newer
// binary: running an older one on it could lose data.
var errNewerSchema = errors.New("refusing to start")
