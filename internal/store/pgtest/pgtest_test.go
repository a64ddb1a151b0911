package pgtest_test

import (
	"context"
	"database/sql"
	"os"
	"testing"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/store/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestStartAndDatabase(t *testing.T) {
	c := pgtest.Shared(t)
	db, err := sql.Open("pgx", c.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var one int
	if err := db.QueryRowContext(context.Background(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 = %d, %v", one, err)
	}
}
