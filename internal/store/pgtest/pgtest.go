// Package pgtest starts throwaway PostgreSQL clusters for tests: initdb and
// pg_ctl on a free loopback port, in a temporary directory, as the postgres
// user when the tests run as root. A cluster takes about a second.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
)

// Cluster is one running PostgreSQL server.
type Cluster struct {
	Dir  string // the data directory
	Port int
	bin  string // the directory of initdb and pg_ctl
	as   []string
	log  string
}

// URL is the address of database db on the cluster, as the superuser.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, db)
}

// ErrUnavailable is returned by Start when this machine has no PostgreSQL.
var ErrUnavailable = errors.New("no PostgreSQL server binaries (apt-get install postgresql)")

// binDir finds initdb: on the PATH, or in Debian's versioned directory.
func binDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Dir(real), nil
		}
		return filepath.Dir(p), nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		return "", ErrUnavailable
	}
	return filepath.Dir(matches[len(matches)-1]), nil
}

// Start creates and starts a cluster. settings are extra server settings
// (name=value), e.g. "idle_in_transaction_session_timeout=5s".
func Start(ctx context.Context, settings ...string) (*Cluster, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: filepath.Join(dir, "data"), bin: bin, log: filepath.Join(dir, "server.log")}
	// PostgreSQL refuses to run as root: run it as postgres, in a
	// directory postgres owns.
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("pgtest: running as root needs a postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
		c.as = []string{"runuser", "-u", "postgres", "--"}
	}
	if out, err := c.run(ctx, "initdb", "-D", c.Dir, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: initdb: %v\n%s", err, out)
	}
	if c.Port, err = freePort(); err != nil {
		return nil, err
	}
	if err := c.configure(settings); err != nil {
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

func (c *Cluster) configure(settings []string) error {
	f, err := os.OpenFile(filepath.Join(c.Dir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	lines := append([]string{
		"listen_addresses = '127.0.0.1'",
		"port = " + strconv.Itoa(c.Port),
		"unix_socket_directories = ''",
		"max_connections = 200",
	}, settings...)
	for _, l := range lines {
		if _, err := fmt.Fprintln(f, l); err != nil {
			return err
		}
	}
	return nil
}

// Start starts a stopped cluster and waits until it accepts connections.
func (c *Cluster) Start(ctx context.Context) error {
	if out, err := c.run(ctx, "pg_ctl", "-D", c.Dir, "-l", c.log, "-w", "-t", "30", "start"); err != nil {
		logs, _ := os.ReadFile(c.log)
		return fmt.Errorf("pgtest: pg_ctl start: %v\n%s\n%s", err, out, logs)
	}
	return nil
}

// Stop stops the cluster at once (mode immediate: like a crash, without
// a checkpoint), keeping its data.
func (c *Cluster) Stop(ctx context.Context) error {
	if out, err := c.run(ctx, "pg_ctl", "-D", c.Dir, "-m", "immediate", "-w", "stop"); err != nil {
		return fmt.Errorf("pgtest: pg_ctl stop: %v\n%s", err, out)
	}
	return nil
}

// Remove stops the cluster and deletes its files.
func (c *Cluster) Remove() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = c.Stop(ctx)
	os.RemoveAll(filepath.Dir(c.Dir))
}

// NewDatabase creates an empty database for one test and returns its URL;
// the database is dropped when the test ends.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "t_" + hex.EncodeToString(b)
	db, err := sql.Open("pgx", c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("pgx", c.URL("postgres"))
		if err != nil {
			return
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return c.URL(name)
}

func (c *Cluster) run(ctx context.Context, tool string, args ...string) ([]byte, error) {
	argv := append(append([]string(nil), c.as...), filepath.Join(c.bin, tool))
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = "/" // postgres may not read the test's working directory
	return cmd.CombinedOutput()
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

var (
	sharedOnce sync.Once
	shared     *Cluster
	sharedErr  error
)

// Shared returns one cluster for the whole test binary, started on first
// use; the test is skipped, with the reason, when PostgreSQL is missing.
// Call Main from TestMain to remove it at the end.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	sharedOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		shared, sharedErr = Start(ctx)
	})
	if errors.Is(sharedErr, ErrUnavailable) {
		fleettest.Missing(t, "PostgreSQL tests skipped: %v", sharedErr)
	}
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

// Main runs the tests and then removes the shared cluster, if one started.
func Main(m *testing.M) int {
	defer RemoveShared()
	return m.Run()
}

// RemoveShared removes the shared cluster, if one started: for a TestMain
// of its own.
func RemoveShared() {
	if shared != nil {
		shared.Remove()
	}
}
