package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin/admintest"
)

// memberBackend is the fake admin backend with members: node2's runners
// go one poll at a time once it is drained.
type memberBackend struct {
	*admintest.Backend
	mu      sync.Mutex
	drained map[string]bool
	busy    int
}

func (b *memberBackend) Members(context.Context) ([]admin.Member, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.drained["node2"] && b.busy > 0 {
		b.busy--
	}
	return []admin.Member{
		{Name: "node1", Status: "online", Architecture: "x86_64", Groups: []string{"default"}, Empty: true, Drained: b.drained["node1"]},
		{Name: "node2", Status: "online", Architecture: "x86_64", Groups: []string{"gpu"}, Busy: b.busy, Instances: b.busy,
			Empty: b.busy == 0, Drained: b.drained["node2"]},
	}, nil
}

func (b *memberBackend) SetMemberDrain(ctx context.Context, name string, drain bool) (admin.Member, error) {
	b.mu.Lock()
	if name != "node1" && name != "node2" {
		b.mu.Unlock()
		return admin.Member{}, fmt.Errorf("%w: LXD has no member %q", admin.ErrBadRequest, name)
	}
	b.drained[name] = drain
	b.mu.Unlock()
	ms, _ := b.Members(ctx)
	for _, m := range ms {
		if m.Name == name {
			return m, nil
		}
	}
	return admin.Member{}, nil
}

func runMember(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	handled, err := memberCommand(context.Background(), args[0], args[1:], &out, &errOut)
	if !handled {
		t.Fatalf("%v not handled", args)
	}
	return out.String() + errOut.String(), err
}

// drain --member stops launches on a member and, with --wait, says when
// nothing of ours is left there; members lists them.
func TestDrainMember(t *testing.T) {
	b := &memberBackend{Backend: admintest.New(), drained: map[string]bool{}, busy: 2}
	addr := adminSocket(t, b)

	out, err := runMember(t, "members", "--admin", addr)
	if err != nil || !strings.Contains(out, "node2   online  false    x86_64  gpu") {
		t.Fatalf("members: %v\n%s", err, out)
	}
	out, err = runMember(t, "drain", "--member", "node2", "--wait", "--admin", addr)
	if err != nil {
		t.Fatalf("drain --wait: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 || !strings.Contains(lines[0], "member node2: drained; waiting for 1 busy runner(s)") ||
		!strings.Contains(lines[len(lines)-1], "member node2: drained and empty") {
		t.Fatalf("drain --wait said:\n%s", out)
	}
	if out, err = runMember(t, "undrain", "--member=node2", "--admin", addr); err != nil || !strings.Contains(out, "not drained") {
		t.Fatalf("undrain: %v\n%s", err, out)
	}
	if _, err = runMember(t, "drain", "--member", "node9", "--admin", addr); err == nil || !strings.Contains(err.Error(), `LXD has no member "node9"`) {
		t.Fatalf("drain of an unknown member: %v", err)
	}
	// Without --member, drain is the pool's, and not this command's.
	if handled, _ := memberCommand(context.Background(), "drain", []string{"linux"}, &bytes.Buffer{}, &bytes.Buffer{}); handled {
		t.Fatal("drain POOL taken for a member drain")
	}
}
