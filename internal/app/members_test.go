package app_test

import (
	"net/http"
	"testing"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/app"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
)

// The admin API lists LXD's members with what of ours each holds, and
// drains one: the drain is kept in the state, and the member says when
// nothing of ours is left there.
func TestMembers(t *testing.T) {
	cl := fleettest.NewCluster(fleet.Member{Name: "node1", Groups: []string{"default"}}, fleet.Member{Name: "node2", Groups: []string{"gpu"}})
	e := newEnv(t, func(_ *app.Config, d *app.Deps) { d.Cluster = cl })
	e.seed(func(tx fleet.Tx) error {
		for _, r := range []fleet.Runner{
			{Name: "gha-linux-busy", Pool: "linux", State: fleet.RunnerBusy},
			{Name: "gha-linux-idle", Pool: "linux", State: fleet.RunnerStarted},
		} {
			r.Org, r.CreatedAt = "acme", fleettest.T0
			if err := tx.PutRunner(r); err != nil {
				return err
			}
		}
		return nil
	})
	ours := fleet.InstanceLabels{Owner: "gha-", Pool: "linux"}
	e.lxd.Put(fleet.Instance{Name: "gha-linux-busy", Managed: true, Labels: ours, State: fleet.InstanceRunning, Location: "node1"})
	e.lxd.Put(fleet.Instance{Name: "gha-linux-idle", Managed: true, Labels: ours, State: fleet.InstanceRunning, Location: "node1"})
	e.lxd.Put(fleet.Instance{Name: "other-x", Managed: true, Labels: fleet.InstanceLabels{Owner: "other-"}, State: fleet.InstanceRunning, Location: "node2"})

	var got struct{ Members []admin.Member }
	if code := e.call(http.MethodGet, "/api/members", &got); code != http.StatusOK {
		t.Fatalf("GET /api/members: %d", code)
	}
	if len(got.Members) != 2 {
		t.Fatalf("members = %+v", got.Members)
	}
	n1, n2 := got.Members[0], got.Members[1]
	if n1.Name != "node1" || n1.Busy != 1 || n1.Idle != 1 || n1.Instances != 2 || n1.Empty || n1.Status != "online" || n1.Architecture != "x86_64" {
		t.Errorf("node1 = %+v", n1)
	}
	if n2.Name != "node2" || n2.Instances != 0 || !n2.Empty || n2.Groups[0] != "gpu" {
		t.Errorf("node2 = %+v (another deployment's instance is not ours)", n2)
	}

	var m admin.Member
	if code := e.call(http.MethodPost, "/api/members/node1/drain", &m); code != http.StatusOK || !m.Drained || m.Name != "node1" {
		t.Fatalf("drain: %d %+v", code, m)
	}
	drained := map[string]bool{}
	e.seed(func(tx fleet.Tx) (err error) { drained, err = tx.DrainedMembers(); return err })
	if !drained["node1"] {
		t.Fatalf("drained members in the state = %v", drained)
	}
	if code := e.call(http.MethodPost, "/api/members/node9/drain", &m); code != http.StatusBadRequest {
		t.Errorf("drain of an unknown member: %d, want 400", code)
	}
	if code := e.call(http.MethodPost, "/api/members/node1/undrain", &m); code != http.StatusOK || m.Drained {
		t.Fatalf("undrain: %d %+v", code, m)
	}
}

// Without LXD's members the routes say so.
func TestMembersWithoutCluster(t *testing.T) {
	e := newEnv(t, nil)
	var v any
	if code := e.call(http.MethodGet, "/api/members", &v); code != http.StatusBadRequest {
		t.Fatalf("GET /api/members without a cluster: %d, want 400", code)
	}
}
