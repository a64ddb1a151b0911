package fleet_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
)

const module = "github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/"

// TestImportGraph keeps the design in the import graph, where a review
// would otherwise have to find it: the domain imports nothing of ours,
// every adapter and the scheduler import only the domain, SQLite comes in
// only through the store, and the service binary carries no test double.
func TestImportGraph(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		fleettest.Missing(t, "no go command: %v", err)
	}
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports,Deps", module+"...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	type pkg struct {
		ImportPath, rel string
		Imports, Deps   []string
	}
	pkgs := map[string]pkg{}
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		p.rel = strings.TrimPrefix(p.ImportPath, module)
		pkgs[p.rel] = p
	}
	ours := func(paths []string) []string {
		var out []string
		for _, p := range paths {
			if rel, ok := strings.CutPrefix(p, module); ok {
				out = append(out, rel)
			}
		}
		return out
	}

	if got := ours(pkgs["internal/fleet"].Deps); len(got) > 0 {
		t.Errorf("internal/fleet imports %v: the domain must import nothing of ours", got)
	}
	for _, name := range []string{"store", "lxd", "ghapp", "webhook", "redeliver", "metrics", "admin", "scheduler"} {
		p, ok := pkgs["internal/"+name]
		if !ok {
			t.Errorf("no package internal/%s", name)
			continue
		}
		for _, imp := range ours(p.Imports) {
			if imp != "internal/fleet" {
				t.Errorf("internal/%s imports %s: adapters and the scheduler import only internal/fleet", name, imp)
			}
		}
	}
	doubles := []string{"internal/fleet/fleettest", "internal/ghfake/ghfaketest", "internal/admin/admintest",
		"internal/image/imagetest", "internal/lxd/lxdtest", "internal/browsertest"}
	for rel, p := range pkgs {
		sqlite := slices.Contains(p.Deps, "modernc.org/sqlite")
		if sqlite && rel != "internal/store" && !slices.Contains(p.Deps, module+"internal/store") {
			t.Errorf("%s depends on SQLite other than through internal/store", rel)
		}
		// Test doubles are for tests (and the dev command), never linked
		// into the service; test helpers may use one another.
		if slices.ContainsFunc(append(doubles, "internal/store/pgtest", "internal/e2e"), func(h string) bool { return strings.HasPrefix(rel, h) }) {
			continue
		}
		for _, double := range doubles {
			if slices.Contains(p.Deps, module+double) {
				t.Errorf("%s links the test helpers %s", rel, double)
			}
		}
	}
	server := pkgs["cmd/server"]
	for _, double := range []string{"internal/ghfake", "internal/devimage"} {
		if slices.Contains(server.Deps, module+double) {
			t.Errorf("the service binary (cmd/server) links %s: that belongs in cmd/dev", double)
		}
	}
}
