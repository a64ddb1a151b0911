package store

import (
	"context"
	"os"
	"testing"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/store/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// eachBackend runs test once on SQLite and once on PostgreSQL. open opens
// the test's own database, the same one each call (so a test can close and
// reopen it); every store it opens is closed at the end.
func eachBackend(t *testing.T, test func(t *testing.T, open func() *Store)) {
	t.Run("sqlite", func(t *testing.T) {
		dir := t.TempDir()
		test(t, func() *Store {
			return mustOpen(t)(Open(context.Background(), dir, Options{Synchronous: "NORMAL"}))
		})
	})
	t.Run("postgres", func(t *testing.T) {
		url := pgtest.Shared(t).NewDatabase(t)
		test(t, func() *Store {
			return mustOpen(t)(OpenPostgres(context.Background(), url, "", Options{}))
		})
	})
}

func mustOpen(t *testing.T) func(*Store, error) *Store {
	return func(st *Store, err error) *Store {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
}
