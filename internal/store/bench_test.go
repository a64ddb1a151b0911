package store

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/store/pgtest"
)

// BenchmarkRecord is the durable part of a webhook: concurrent deliveries
// recorded through the group-commit writer, on each backend. PostgreSQL
// runs on a throwaway cluster with its default fsync settings.
//
//	go test ./internal/store -run '^$' -bench Record -benchtime 20000x -count 5
func BenchmarkRecord(b *testing.B) {
	ctx := context.Background()
	for _, be := range []struct {
		name string
		open func(b *testing.B) *Store
	}{
		{"sqlite-full", func(b *testing.B) *Store { return benchOpen(b)(Open(ctx, b.TempDir(), Options{})) }},
		{"postgres", func(b *testing.B) *Store {
			c, err := pgtest.Start(ctx)
			if err != nil {
				b.Skip(err)
			}
			b.Cleanup(c.Remove)
			url := c.URL("postgres")
			return benchOpen(b)(OpenPostgres(ctx, url, "", Options{}))
		}},
	} {
		b.Run(be.name, func(b *testing.B) {
			st := be.open(b)
			var n atomic.Int64
			d := fleet.Delivery{Action: fleet.ActionQueued, JobID: 1, RunID: 2, InstallationID: 3, Org: "acme",
				Repo: "acme/app", Labels: []string{"self-hosted", "linux", "x64"}, ReceivedAt: time.Now()}
			b.SetParallelism(16) // 16 × GOMAXPROCS writers, as many webhooks at once
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					d := d
					d.DeliveryID = fmt.Sprint("d-", n.Add(1))
					if _, err := st.Record(ctx, d); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func benchOpen(b *testing.B) func(*Store, error) *Store {
	return func(st *Store, err error) *Store {
		b.Helper()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st
	}
}
