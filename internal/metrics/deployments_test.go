package metrics_test

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/metrics"
)

// The dashboard and the alert rules are checked against what the package
// really registers, so that a renamed metric cannot leave them silently
// empty.

const (
	dashboardFile = "../../deployments/grafana-dashboard.json"
	alertsFile    = "../../deployments/prometheus-alerts.yaml"
)

var metricName = regexp.MustCompile(`\b` + metrics.Prefix + `[a-zA-Z0-9_]*`)

// registeredTypes maps each of the package's metric names to its type.
func registeredTypes(t *testing.T) map[string]dto.MetricType {
	t.Helper()
	m := metrics.New("dev")
	touchAll(m)
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]dto.MetricType{}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), metrics.Prefix) {
			types[mf.GetName()] = mf.GetType()
		}
	}
	if len(types) != len(metrics.Names()) {
		t.Fatalf("gathered %d of our families, want %d", len(types), len(metrics.Names()))
	}
	return types
}

// checkNames reports every metric name in expr that would select nothing:
// unknown names, and histograms used without _bucket, _sum or _count.
// It returns the registered names used.
func checkNames(t *testing.T, where, expr string, types map[string]dto.MetricType) []string {
	t.Helper()
	var used []string
	for _, name := range metricName.FindAllString(expr, -1) {
		if typ, ok := types[name]; ok {
			if typ == dto.MetricType_HISTOGRAM {
				t.Errorf("%s: histogram %s used without _bucket, _sum or _count", where, name)
			}
			used = append(used, name)
			continue
		}
		base := name
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			base = strings.TrimSuffix(base, s)
		}
		if typ, ok := types[base]; ok && base != name && typ == dto.MetricType_HISTOGRAM {
			used = append(used, base)
			continue
		}
		t.Errorf("%s: %s is not a metric the package registers", where, name)
	}
	return used
}

// checkBalanced catches a truncated or mistyped expression.
func checkBalanced(t *testing.T, where, expr string) {
	t.Helper()
	var stack []rune
	pairs := map[rune]rune{')': '(', '}': '{', ']': '['}
	inString := false
	for _, r := range expr {
		switch {
		case r == '"':
			inString = !inString
		case inString:
		case r == '(' || r == '{' || r == '[':
			stack = append(stack, r)
		case pairs[r] != 0:
			if len(stack) == 0 || stack[len(stack)-1] != pairs[r] {
				t.Errorf("%s: unbalanced %q in %s", where, r, expr)
				return
			}
			stack = stack[:len(stack)-1]
		}
	}
	if len(stack) != 0 || inString {
		t.Errorf("%s: unclosed brackets or quotes in %s", where, expr)
	}
}

type dashboard struct {
	Inputs []struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		PluginID string `json:"pluginId"`
	} `json:"__inputs"`
	SchemaVersion int     `json:"schemaVersion"`
	Title         string  `json:"title"`
	UID           string  `json:"uid"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string `json:"name"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
}

func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d, want ≥ 36", d.SchemaVersion)
	}
	if d.Title == "" || d.UID == "" {
		t.Error("dashboard lacks a title or uid")
	}
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].Type != "datasource" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs = %+v, want one prometheus datasource DS_PROMETHEUS", d.Inputs)
	}

	types := registeredTypes(t)
	used := map[string]bool{}
	ids := map[int]bool{}
	var placed []panel
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: bad gridPos %+v", p.Title, p.GridPos)
		}
		for _, q := range placed {
			if overlap(p, q) {
				t.Errorf("panels %q and %q overlap", p.Title, q.Title)
			}
		}
		placed = append(placed, p)
		if p.Type == "row" {
			continue
		}
		if p.Datasource.Type != "prometheus" || p.Datasource.UID != "${DS_PROMETHEUS}" {
			t.Errorf("panel %q: datasource %+v, want ${DS_PROMETHEUS}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			where := "panel " + p.Title + " " + q.RefID
			if q.Expr == "" {
				t.Errorf("%s: empty expr", where)
			}
			checkBalanced(t, where, q.Expr)
			for _, n := range checkNames(t, where, q.Expr, types) {
				used[n] = true
			}
		}
	}
	for _, v := range d.Templating.List {
		if v.Datasource.UID != "${DS_PROMETHEUS}" {
			t.Errorf("variable %s: datasource %q", v.Name, v.Datasource.UID)
		}
		checkNames(t, "variable "+v.Name, v.Definition, types)
	}
	// Every name is on the dashboard: a new metric gets a panel.
	for _, n := range metrics.Names() {
		if !used[n] {
			t.Errorf("no panel shows %s", n)
		}
	}
}

func overlap(a, b panel) bool {
	ga, gb := a.GridPos, b.GridPos
	return ga.X < gb.X+gb.W && gb.X < ga.X+ga.W && ga.Y < gb.Y+gb.H && gb.Y < ga.Y+ga.H
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func TestPrometheusAlerts(t *testing.T) {
	raw, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true) // a misspelt key would make Prometheus refuse the file
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	if len(f.Groups) == 0 {
		t.Fatal("no rule groups")
	}
	types := registeredTypes(t)
	alerts := map[string]string{} // alert name → expr
	for _, g := range f.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q: a name and rules are required", g.Name)
		}
		for _, r := range g.Rules {
			where := "alert " + r.Alert
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("rule %+v: alert and expr are required", r)
				continue
			}
			if _, dup := alerts[r.Alert]; dup {
				t.Errorf("%s defined twice", where)
			}
			alerts[r.Alert] = r.Expr
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for: %v", where, err)
				}
			}
			if r.Labels["severity"] == "" {
				t.Errorf("%s: no severity label", where)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: summary and description annotations are required", where)
			}
			checkBalanced(t, where, r.Expr)
			checkNames(t, where, r.Expr, types)
		}
	}
	// The conditions the rules must cover, by the series they read.
	for _, need := range []string{
		metrics.JobOldestQueuedSeconds,
		metrics.ReconcileErrorsTotal,
		metrics.LastReconcileTimestampSeconds,
		metrics.GitHubRateLimitRemaining,
		metrics.LaunchesTotal + `{result="error"}`,
		`up{job="lxd-gha-autoscaler"} == 0`,
		metrics.LeaderRole,
	} {
		found := false
		for _, expr := range alerts {
			found = found || strings.Contains(expr, need)
		}
		if !found {
			t.Errorf("no alert reads %s", need)
		}
	}
}
