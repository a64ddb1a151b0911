package lxd_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	lxdclient "github.com/canonical/lxd/client"
	"github.com/canonical/lxd/shared/api"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/devimage"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd/lxdtest"
)

// gone is how long LXD may take to delete an ephemeral instance whose init
// exited; it usually takes about a second.
const gone = 30 * time.Second

func TestConfigValidate(t *testing.T) {
	cert, key := selfSigned(t)
	tests := []struct {
		name string
		cfg  lxd.Config
		want []string // substrings of the error; none means valid
	}{
		{"socket", lxd.Config{Socket: "/var/lib/lxd/unix.socket"}, nil},
		{"url", lxd.Config{URLs: []string{"https://lxd.example:8443"}, ClientCert: cert, ClientKey: key, ServerCert: cert, Project: "ci", OpTimeout: time.Second}, nil},
		{"cluster members", lxd.Config{URLs: []string{"https://10.0.0.1:8443", "https://10.0.0.2:8443/"}, ClientCert: cert, ClientKey: key, ServerCert: cert}, nil},
		{"a member twice", lxd.Config{URLs: []string{"https://10.0.0.1:8443", "https://10.0.0.1:8443/"}, ClientCert: cert, ClientKey: key},
			[]string{`lxd.url "https://10.0.0.1:8443/": listed twice`}},
		{"a path", lxd.Config{URLs: []string{"https://10.0.0.1:8443/1.0"}, ClientCert: cert, ClientKey: key}, []string{"an address has no path"}},
		{"url without server cert", lxd.Config{URLs: []string{"https://lxd.example:8443"}, ClientCert: cert, ClientKey: key}, nil},
		{"neither", lxd.Config{}, []string{"set lxd.socket or lxd.url"}},
		{"both", lxd.Config{Socket: "/s", URLs: []string{"https://h"}}, []string{"lxd.socket and lxd.url are mutually exclusive"}},
		{"every url problem", lxd.Config{URLs: []string{"http://h"}, OpTimeout: -time.Second, Project: "a/b"},
			[]string{`lxd.url "http://h": scheme must be https`, "lxd.client_cert is required with lxd.url",
				"lxd.client_key is required with lxd.url", "operation timeout -1s must not be negative", `lxd.project "a/b"`}},
		{"no host", lxd.Config{URLs: []string{"https://"}, ClientCert: cert, ClientKey: key}, []string{"lxd.url \"https://\": missing host"}},
		{"bad key pair", lxd.Config{URLs: []string{"https://h"}, ClientCert: cert, ClientKey: []byte("junk-SECRET")}, []string{"lxd.client_cert and lxd.client_key: "}},
		{"bad server cert", lxd.Config{URLs: []string{"https://h"}, ClientCert: cert, ClientKey: key, ServerCert: []byte("junk-SECRET")}, []string{"lxd.server_cert: "}},
		{"certs with socket", lxd.Config{Socket: "/s", ClientCert: cert}, []string{"only used with lxd.url"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
			// The config file's words, never Go's, and no file content.
			for _, bad := range []string{"Socket", "with URL", "ClientCert", "ClientKey", "ServerCert", "Project", "OpTimeout", "SECRET"} {
				if strings.Contains(err.Error(), bad) {
					t.Errorf("Validate() = %q, holds %q", err, bad)
				}
			}
			if _, cerr := lxd.Connect(context.Background(), tt.cfg); cerr == nil {
				t.Errorf("Connect accepted an invalid config")
			}
		})
	}
}

func TestPing(t *testing.T) {
	t.Parallel()
	c := lxdtest.Connect(t)
	if err := c.Ping(lxdtest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	_, err := lxd.Connect(lxdtest.Ctx(t), lxd.Config{Socket: lxdtest.SocketPath(), Project: "no-such-project"})
	if !errors.Is(err, fleet.ErrNotFound) || !strings.Contains(err.Error(), "no-such-project") {
		t.Errorf("Connect to a missing project = %v, want a not-found error naming it", err)
	}
}

func TestCreateFromAliasAndFingerprint(t *testing.T) {
	t.Parallel()
	c := lxdtest.Connect(t)
	raw := lxdtest.Raw(t)
	ctx := lxdtest.Ctx(t)
	alias, fp := lxdtest.Image(t, c, devimage.Options{})
	created := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

	// At once, through one client: calls must not share per-call state.
	images := []string{alias, fp, fp[:12]}
	names := make([]string, len(images))
	errs := make([]error, len(images))
	var wg sync.WaitGroup
	for i, image := range images {
		names[i] = lxdtest.Name(t)
		lxdtest.Cleanup(t, c, names[i])
		spec := fleet.InstanceSpec{
			Name: names[i], Image: image, Type: "container", Profiles: []string{"default"},
			Config:    map[string]string{"limits.processes": "100"},
			Labels:    fleet.InstanceLabels{Pool: "small", CreatedAt: created},
			JITConfig: fleet.Secret("jit-" + names[i]),
		}
		wg.Go(func() { errs[i] = c.Create(ctx, spec) })
	}
	wg.Wait()

	for i, name := range names {
		if errs[i] != nil {
			t.Errorf("Create from %s: %v", images[i], errs[i])
			continue
		}
		inst, _, err := raw.GetInstance(name)
		if err != nil {
			t.Fatal(err)
		}
		if inst.Status != "Running" || !inst.Ephemeral {
			t.Errorf("%s: status %s ephemeral %v, want Running and ephemeral", name, inst.Status, inst.Ephemeral)
		}
		want := map[string]string{
			fleet.KeyManaged:      "true",
			lxd.KeyPool:           "small",
			lxd.KeyCreatedAt:      "2024-05-06T07:08:09Z",
			fleet.KeyJITConfig:    "jit-" + name,
			"limits.processes":    "100",
			"volatile.base_image": fp,
		}
		for k, v := range want {
			if inst.Config[k] != v {
				t.Errorf("%s: config %s = %q, want %q", name, k, inst.Config[k], v)
			}
		}
		for _, k := range []string{lxd.KeyOwner, lxd.KeyJobID, lxd.KeyRunnerID, lxd.KeyOrg, lxd.KeyInstall} {
			if v, ok := inst.Config[k]; ok {
				t.Errorf("%s: label %s = %q set though the spec's is zero", name, k, v)
			}
		}
	}
}

func TestCreateByCopy(t *testing.T) {
	t.Parallel()
	c := lxdtest.Connect(t)
	raw := lxdtest.Raw(t)
	ctx := lxdtest.Ctx(t)
	_, fp := lxdtest.Image(t, c, devimage.Options{})

	// A stopped, persistent template with a snapshot, made by hand.
	src := lxdtest.Name(t)
	lxdtest.Cleanup(t, c, src)
	createByHand(t, raw, src, fp, map[string]string{
		"user.template": "yes", fleet.KeyJITConfig: "stale", lxd.KeyJobID: "5", lxd.KeyRunnerID: "6",
	})
	op, err := raw.CreateInstanceSnapshot(src, api.InstanceSnapshotsPost{Name: "snap0"})
	if err == nil {
		err = op.Wait()
	}
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}

	name := lxdtest.Name(t)
	lxdtest.Cleanup(t, c, name)
	err = c.Create(ctx, fleet.InstanceSpec{
		Name: name, SourceInstance: src,
		Labels:    fleet.InstanceLabels{Pool: "copied"},
		JITConfig: "fresh",
	})
	if err != nil {
		t.Fatalf("Create by copy: %v", err)
	}
	inst, _, err := raw.GetInstance(name)
	if err != nil {
		t.Fatal(err)
	}
	if inst.Status != "Running" || !inst.Ephemeral {
		t.Errorf("copy: status %s ephemeral %v, want Running and ephemeral", inst.Status, inst.Ephemeral)
	}
	for k, v := range map[string]string{"user.template": "yes", lxd.KeyPool: "copied", fleet.KeyJITConfig: "fresh", fleet.KeyManaged: "true"} {
		if inst.Config[k] != v {
			t.Errorf("copy: config %s = %q, want %q", k, inst.Config[k], v)
		}
	}
	for _, k := range []string{lxd.KeyJobID, lxd.KeyRunnerID} {
		if v, ok := inst.Config[k]; ok {
			t.Errorf("copy inherited the source's %s = %q", k, v)
		}
	}
	if strings.Join(inst.Profiles, ",") != "default" {
		t.Errorf("copy: profiles %v, want the source's [default]", inst.Profiles)
	}
	snaps, err := raw.GetInstanceSnapshotNames(name)
	if err != nil || len(snaps) != 0 {
		t.Errorf("copy: snapshots %v (%v), want none", snaps, err)
	}
	if s, _, _ := raw.GetInstance(src); s == nil || s.Status != "Stopped" {
		t.Errorf("source changed: %+v", s)
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	c := lxdtest.Connect(t)
	raw := lxdtest.Raw(t)
	ctx := lxdtest.Ctx(t)
	_, fp := lxdtest.Image(t, c, devimage.Options{})

	created := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	ours := lxdtest.Name(t)
	lxdtest.Cleanup(t, c, ours)
	labels := fleet.InstanceLabels{
		Owner: "gha-", Pool: "p1", Org: "acme", InstallationID: 12,
		JobID:    9007199254740993, // more than a float64 holds exactly
		RunnerID: 77, CreatedAt: created,
	}
	err := c.Create(ctx, fleet.InstanceSpec{Name: ours, Image: fp, Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
	// Managed but with values a person mangled: zero, not an error.
	mangled := lxdtest.Name(t)
	lxdtest.Cleanup(t, c, mangled)
	createByHand(t, raw, mangled, fp, map[string]string{
		fleet.KeyManaged: "true", lxd.KeyPool: "p2",
		lxd.KeyJobID: "forty-two", lxd.KeyRunnerID: "-3", lxd.KeyCreatedAt: "yesterday",
	})
	// Not ours: no key, or a value other than "true".
	var foreign []string
	for _, cfg := range []map[string]string{nil, {fleet.KeyManaged: "yes", lxd.KeyPool: "p1"}} {
		n := lxdtest.Name(t)
		lxdtest.Cleanup(t, c, n)
		createByHand(t, raw, n, fp, cfg)
		foreign = append(foreign, n)
	}

	list, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]fleet.Instance{}
	for _, in := range list {
		got[in.Name] = in
	}
	want := map[string]fleet.Instance{
		ours:    {Name: ours, Managed: true, Labels: labels, State: fleet.InstanceRunning, Image: fp},
		mangled: {Name: mangled, Managed: true, Labels: fleet.InstanceLabels{Pool: "p2"}, State: fleet.InstanceStopped, Image: fp},
	}
	for n, w := range want {
		g, ok := got[n]
		if !ok {
			t.Errorf("List lacks %s", n)
			continue
		}
		if g != w {
			t.Errorf("List: got %+v, want %+v", g, w)
		}
	}
	for _, n := range foreign {
		if _, ok := got[n]; ok {
			t.Errorf("List has %s, which is not managed", n)
		}
	}
	// Nothing listed lacks the key, whoever else uses this LXD.
	for _, in := range list {
		inst, _, err := raw.GetInstance(in.Name)
		if err == nil && inst.Config[fleet.KeyManaged] != "true" {
			t.Errorf("List has unmanaged %s", in.Name)
		}
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	c := lxdtest.Connect(t)
	raw := lxdtest.Raw(t)
	ctx := lxdtest.Ctx(t)
	_, fp := lxdtest.Image(t, c, devimage.Options{})

	running := lxdtest.Name(t)
	lxdtest.Cleanup(t, c, running)
	if err := c.Create(ctx, fleet.InstanceSpec{Name: running, Image: fp}); err != nil {
		t.Fatal(err)
	}
	stopped := lxdtest.Name(t)
	lxdtest.Cleanup(t, c, stopped)
	createByHand(t, raw, stopped, fp, nil)

	for _, name := range []string{running, stopped} {
		if err := c.Delete(ctx, name); err != nil {
			t.Errorf("Delete(%s): %v", name, err)
		}
		if _, err := c.Get(ctx, name); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("after Delete(%s), Get = %v, want ErrNotFound", name, err)
		}
		// Again: now it does not exist.
		if err := c.Delete(ctx, name); err != nil {
			t.Errorf("second Delete(%s) = %v, want nil", name, err)
		}
	}
	if err := c.Delete(ctx, "t-never-existed"); err != nil {
		t.Errorf("Delete of a missing instance = %v, want nil", err)
	}
}

// Under a refused permit (a leader whose lease may have lapsed) no request
// is sent, whatever the call, and a context that drops the cancellation
// keeps the permit: the cleanups in Create use one.
func TestPermitRefusedSendsNothing(t *testing.T) {
	t.Parallel()
	c := lxdtest.Connect(t)
	ctx := lxdtest.Ctx(t)
	_, fp := lxdtest.Image(t, c, devimage.Options{})
	name := lxdtest.Name(t)
	lxdtest.Cleanup(t, c, name)
	if err := c.Create(ctx, fleet.InstanceSpec{Name: name, Image: fp}); err != nil {
		t.Fatal(err)
	}
	refused := context.WithoutCancel(fleet.WithPermit(ctx, func() error { return fleet.ErrNotLeader }))
	if err := c.Delete(refused, name); !errors.Is(err, fleet.ErrNotLeader) {
		t.Fatalf("Delete under a refused permit = %v, want ErrNotLeader", err)
	}
	if _, err := c.List(refused); !errors.Is(err, fleet.ErrNotLeader) {
		t.Fatalf("List under a refused permit = %v, want ErrNotLeader", err)
	}
	if in, err := c.Get(ctx, name); err != nil || !in.Running() {
		t.Fatalf("the instance after a refused Delete: %+v, %v; want it running", in, err)
	}
	other := lxdtest.Name(t)
	lxdtest.Cleanup(t, c, other)
	if err := c.Create(refused, fleet.InstanceSpec{Name: other, Image: fp}); !errors.Is(err, fleet.ErrNotLeader) {
		t.Fatalf("Create under a refused permit = %v, want ErrNotLeader", err)
	}
	if _, err := c.Get(ctx, other); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("Get of an instance whose create was refused = %v, want ErrNotFound", err)
	}
}

func TestEphemeralInstanceGoesAwayWhenInitExits(t *testing.T) {
	t.Parallel()
	c := lxdtest.Connect(t)
	alias, _ := lxdtest.Image(t, c, devimage.Options{Init: []string{"/bin/busybox", "true"}})
	name := lxdtest.Name(t)
	lxdtest.Cleanup(t, c, name)
	if err := c.Create(lxdtest.Ctx(t), fleet.InstanceSpec{Name: name, Image: alias}); err != nil {
		t.Fatal(err)
	}
	lxdtest.WaitGone(t, c, name, gone)
}

// hits serves path and sends each request body to the returned channel.
func hits(t *testing.T, path string) (port int, ch <-chan string) {
	t.Helper()
	c := make(chan string, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path {
			http.NotFound(w, r)
			return
		}
		b, _ := io.ReadAll(r.Body)
		select {
		case c <- string(b):
		default:
		}
		fmt.Fprintln(w, "pong")
	}))
	t.Cleanup(srv.Close)
	_, p, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	port, err = strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return port, c
}

func await(t *testing.T, ch <-chan string, what string) string {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(gone):
		t.Fatalf("no %s within %s", what, gone)
		return ""
	}
}

func TestProxyDeviceReachesHost(t *testing.T) {
	t.Parallel()
	c := lxdtest.Connect(t)
	port, pings := hits(t, "/ping")
	// The proxy may listen a moment after init starts: retry.
	script := fmt.Sprintf("for i in $(seq 1 100); do wget -q -O- http://127.0.0.1:%d/ping && exit 0; sleep 0.2; done; exit 1", port)
	alias, _ := lxdtest.Image(t, c, devimage.Options{Init: []string{"/bin/sh", "-c", script}})
	profile := lxdtest.Profile(t, c, map[string]map[string]string{"host": lxdtest.ProxyDevice(port)})

	name := lxdtest.Name(t)
	lxdtest.Cleanup(t, c, name)
	if err := c.Create(lxdtest.Ctx(t), fleet.InstanceSpec{Name: name, Image: alias, Profiles: []string{"default", profile}}); err != nil {
		t.Fatal(err)
	}
	await(t, pings, "request from the container")
	lxdtest.WaitGone(t, c, name, gone)
}

func TestJITConfigReadableInside(t *testing.T) {
	t.Parallel()
	c := lxdtest.Connect(t)
	port, posts := hits(t, "/jit")
	probe := lxdtest.BuildGo(t, lxdtest.ProbePackage)
	alias, _ := lxdtest.Image(t, c, devimage.Options{
		Binary: probe,
		Init:   []string{devimage.DefaultBinaryPath, "-get", fleet.KeyJITConfig, "-post", fmt.Sprintf("http://127.0.0.1:%d/jit", port)},
	})
	profile := lxdtest.Profile(t, c, map[string]map[string]string{"host": lxdtest.ProxyDevice(port)})

	name := lxdtest.Name(t)
	secret := "eyJqaXQiOi" + name + "+/=="
	lxdtest.Cleanup(t, c, name)
	err := c.Create(lxdtest.Ctx(t), fleet.InstanceSpec{
		Name: name, Image: alias, Profiles: []string{"default", profile}, JITConfig: fleet.Secret(secret),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := await(t, posts, "jitconfig from the container"); got != secret {
		t.Errorf("container read %q, want %q", got, secret)
	}
	lxdtest.WaitGone(t, c, name, gone)
}

// TestPreparedInstance: a prepared instance is created stopped from its
// image, holds no JIT config and stays; StartPrepared gives it its labels
// and JIT config, which the runner inside reads from its first moment.
func TestPreparedInstance(t *testing.T) {
	t.Parallel()
	c := lxdtest.Connect(t)
	ctx := lxdtest.Ctx(t)
	port, posts := hits(t, "/jit")
	probe := lxdtest.BuildGo(t, lxdtest.ProbePackage)
	alias, fp := lxdtest.Image(t, c, devimage.Options{
		Binary: probe,
		Init:   []string{devimage.DefaultBinaryPath, "-get", fleet.KeyJITConfig, "-post", fmt.Sprintf("http://127.0.0.1:%d/jit", port)},
	})
	profile := lxdtest.Profile(t, c, map[string]map[string]string{"host": lxdtest.ProxyDevice(port)})
	if got, err := c.ImageFingerprint(ctx, alias); err != nil || got != fp {
		t.Fatalf("ImageFingerprint(%s) = %q, %v; want %s", alias, got, err, fp)
	}
	if _, err := c.ImageFingerprint(ctx, "no-such-image-"+lxdtest.Name(t)); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("ImageFingerprint of a missing image: %v, want ErrNotFound", err)
	}

	name := lxdtest.Name(t)
	lxdtest.Cleanup(t, c, name)
	created := time.Now().UTC().Truncate(time.Second)
	spec := fleet.InstanceSpec{Name: name, Image: alias, Profiles: []string{"default", profile},
		Labels: fleet.InstanceLabels{Owner: "t-", Pool: "linux", CreatedAt: created}}
	if err := c.Prepare(ctx, fleet.InstanceSpec{Name: name, Image: alias, JITConfig: "x"}); err == nil {
		t.Fatal("Prepare with a JIT config: no error")
	}
	if err := c.Prepare(ctx, spec); err != nil {
		t.Fatal(err)
	}
	in, err := c.Get(ctx, name)
	if err != nil || in.State != fleet.InstanceStopped || !in.Managed || in.Image != fp || in.Labels.Owner != "t-" || in.Labels.RunnerID != 0 {
		t.Fatalf("prepared instance = %+v, %v; want a stopped managed instance of image %s without a runner", in, err, fp)
	}
	raw, _, err := lxdtest.Raw(t).GetInstance(name)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := raw.Config[fleet.KeyJITConfig]; ok {
		t.Fatalf("prepared instance holds %s = %q", fleet.KeyJITConfig, v)
	}
	select {
	case got := <-posts:
		t.Fatalf("a prepared instance ran: it posted %q", got)
	case <-time.After(500 * time.Millisecond):
	}

	// Someone else's owner label: refused, and nothing is set.
	if err := c.StartPrepared(ctx, name, fleet.InstanceLabels{Owner: "other-"}, "y"); err == nil {
		t.Fatal("StartPrepared for another owner: no error")
	}
	secret := "eyJqaXQiOi" + name + "+/=="
	labels := fleet.InstanceLabels{Owner: "t-", Pool: "linux", JobID: 42, RunnerID: 7, Org: "acme", InstallationID: 9, CreatedAt: created}
	if err := c.StartPrepared(ctx, name, labels, fleet.Secret(secret)); err != nil {
		t.Fatal(err)
	}
	if got := await(t, posts, "jitconfig from the container"); got != secret {
		t.Errorf("container read %q, want %q", got, secret)
	}
	if in, err := c.Get(ctx, name); err == nil && in.Labels != labels {
		t.Errorf("labels after StartPrepared = %+v, want %+v", in.Labels, labels)
	}
	lxdtest.WaitGone(t, c, name, gone)
	if err := c.StartPrepared(ctx, name, labels, "z"); !errors.Is(err, fleet.ErrNotFound) {
		t.Errorf("StartPrepared of a missing instance: %v, want ErrNotFound", err)
	}
}

func TestCreateErrors(t *testing.T) {
	t.Parallel()
	c := lxdtest.Connect(t)
	ctx := lxdtest.Ctx(t)
	alias, _ := lxdtest.Image(t, c, devimage.Options{})
	// Creates fine, fails to start: LXD checks a NIC's parent only then.
	badNIC := lxdtest.Profile(t, c, map[string]map[string]string{
		"eth9": {"type": "nic", "nictype": "bridged", "parent": "nosuchbr0"},
	})
	taken := lxdtest.Name(t)
	lxdtest.Cleanup(t, c, taken)
	if err := c.Create(ctx, fleet.InstanceSpec{Name: taken, Image: alias}); err != nil {
		t.Fatal(err)
	}

	const secret = "s3cr3t-JIT-value-that-must-never-be-printed"
	tests := []struct {
		name     string
		spec     func(name string) fleet.InstanceSpec
		notFound bool
		survives bool // the instance exists afterwards (it was someone's before)
	}{
		{"bad profile", func(n string) fleet.InstanceSpec {
			return fleet.InstanceSpec{Name: n, Image: alias, Profiles: []string{"default", "no-such-profile-" + n}}
		}, false, false},
		// LXD echoes a bad value in its message; the secret must still not show.
		{"bad value echoed", func(n string) fleet.InstanceSpec {
			return fleet.InstanceSpec{Name: n, Image: alias, Config: map[string]string{"limits.memory": secret}}
		}, false, false},
		{"start fails", func(n string) fleet.InstanceSpec {
			return fleet.InstanceSpec{Name: n, Image: alias, Profiles: []string{"default", badNIC}}
		}, false, false},
		{"missing image", func(n string) fleet.InstanceSpec {
			return fleet.InstanceSpec{Name: n, Image: "no-such-image-" + n}
		}, true, false},
		{"missing source", func(n string) fleet.InstanceSpec {
			return fleet.InstanceSpec{Name: n, SourceInstance: "no-such-instance-" + n}
		}, true, false},
		{"name taken", func(string) fleet.InstanceSpec {
			return fleet.InstanceSpec{Name: taken, Image: alias}
		}, false, true},
		{"image and source", func(n string) fleet.InstanceSpec {
			return fleet.InstanceSpec{Name: n, Image: alias, SourceInstance: taken}
		}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := tt.spec(lxdtest.Name(t))
			spec.JITConfig = secret
			if !tt.survives {
				lxdtest.Cleanup(t, c, spec.Name)
			}
			err := c.Create(ctx, spec)
			if err == nil {
				t.Fatal("Create succeeded")
			}
			t.Logf("error: %v", err)
			if strings.Contains(err.Error(), secret) || strings.Contains(fmt.Sprintf("%+v %#v", err, err), secret) {
				t.Errorf("error shows the JIT config: %v", err)
			}
			if !strings.Contains(err.Error(), spec.Name) {
				t.Errorf("error %q does not name the instance", err)
			}
			if tt.name == "start fails" && !strings.Contains(err.Error(), "start instance") {
				t.Errorf("error %q is not about the start", err)
			}
			if got := errors.Is(err, fleet.ErrNotFound); got != tt.notFound {
				t.Errorf("errors.Is(err, ErrNotFound) = %v, want %v", got, tt.notFound)
			}
			_, gerr := c.Get(ctx, spec.Name)
			if tt.survives && gerr != nil {
				t.Errorf("existing instance was harmed: %v", gerr)
			}
			if !tt.survives && !errors.Is(gerr, fleet.ErrNotFound) {
				t.Errorf("failed Create left the instance behind (Get = %v)", gerr)
			}
		})
	}

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Create(cancelled, fleet.InstanceSpec{Name: lxdtest.Name(t), Image: alias}); !errors.Is(err, context.Canceled) {
		t.Errorf("Create with a cancelled context = %v, want context.Canceled", err)
	}
}

func TestImportImage(t *testing.T) {
	t.Parallel()
	c := lxdtest.Connect(t)
	raw := lxdtest.Raw(t)
	ctx := lxdtest.Ctx(t)
	alias := lxdtest.Name(t)

	build := func(desc string) []byte {
		var buf bytes.Buffer
		opts := devimage.Options{Description: desc, Time: time.Unix(1700000000, 0), Gzip: true}
		if err := devimage.Build(&buf, opts); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	imp := func(tarball []byte) string {
		fp, err := c.ImportImage(ctx, bytes.NewReader(tarball), alias)
		if fp != "" {
			t.Cleanup(func() { _ = c.DeleteImage(context.Background(), fp) })
		}
		if err != nil {
			t.Fatalf("ImportImage: %v", err)
		}
		return fp
	}
	target := func() string {
		a, _, err := raw.GetImageAlias(alias)
		if err != nil {
			t.Fatal(err)
		}
		return a.Target
	}

	first := build("first " + alias)
	fp1 := imp(first)
	if target() != fp1 {
		t.Errorf("alias -> %s, want %s", target(), fp1)
	}
	// The same bytes again: LXD refuses a duplicate; we return the image.
	if again := imp(first); again != fp1 {
		t.Errorf("re-import gave %s, want %s", again, fp1)
	}
	fp2 := imp(build("second " + alias))
	if fp2 == fp1 {
		t.Fatal("different images, same fingerprint")
	}
	if target() != fp2 {
		t.Errorf("alias not moved: -> %s, want %s", target(), fp2)
	}

	if err := c.DeleteImage(ctx, fp1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := raw.GetImage(fp1); !api.StatusErrorCheck(err, http.StatusNotFound) {
		t.Errorf("image still there after DeleteImage: %v", err)
	}
	if err := c.DeleteImage(ctx, fp1); err != nil {
		t.Errorf("DeleteImage of a missing image = %v, want nil", err)
	}
	if _, err := c.ImportImage(ctx, strings.NewReader("not a tarball"), ""); err == nil {
		t.Error("ImportImage accepted junk")
	}
}

func TestEnsureProfile(t *testing.T) {
	t.Parallel()
	c := lxdtest.Connect(t)
	raw := lxdtest.Raw(t)
	ctx := lxdtest.Ctx(t)
	name := lxdtest.Profile(t, c, map[string]map[string]string{"a": lxdtest.ProxyDevice(1)})
	if err := c.EnsureProfile(ctx, name, map[string]map[string]string{"b": lxdtest.ProxyDevice(2)}); err != nil {
		t.Fatal(err)
	}
	p, _, err := raw.GetProfile(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Devices["a"]; ok || p.Devices["b"]["listen"] != "tcp:127.0.0.1:2" {
		t.Errorf("devices = %v, want only b", p.Devices)
	}
	if err := c.DeleteProfile(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteProfile(ctx, name); err != nil {
		t.Errorf("DeleteProfile of a missing profile = %v, want nil", err)
	}
}

// createByHand makes a stopped, persistent instance through LXD's own
// client, with exactly config (no keys of ours unless given).
func createByHand(t *testing.T, raw lxdclient.InstanceServer, name, fp string, config map[string]string) {
	t.Helper()
	op, err := raw.CreateInstance(api.InstancesPost{
		Name:        name,
		Source:      api.InstanceSource{Type: api.SourceTypeImage, Fingerprint: fp},
		InstancePut: api.InstancePut{Config: config},
	})
	if err == nil {
		err = op.Wait()
	}
	if err != nil {
		t.Fatalf("create %s by hand: %v", name, err)
	}
}

func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func TestProfileAndStoragePool(t *testing.T) {
	t.Parallel()
	c := lxdtest.Connect(t)
	ctx := lxdtest.Ctx(t)
	name := lxdtest.Profile(t, c, map[string]map[string]string{"a": lxdtest.ProxyDevice(1)})
	p, err := c.Profile(ctx, name)
	if err != nil || p.Name != name || p.Devices["a"]["listen"] != "tcp:127.0.0.1:1" {
		t.Errorf("Profile(%s) = %+v, %v", name, p, err)
	}
	if _, err := c.Profile(ctx, lxdtest.Name(t)); !errors.Is(err, fleet.ErrNotFound) {
		t.Errorf("Profile of a missing profile: %v, want ErrNotFound", err)
	}
	def, err := c.Profile(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	pool := def.Devices["root"]["pool"]
	if pool == "" {
		fleettest.Missing(t, "the default profile has no root disk: %v", def.Devices)
	}
	if err := c.StoragePool(ctx, pool); err != nil {
		t.Errorf("StoragePool(%s) = %v", pool, err)
	}
	if err := c.StoragePool(ctx, lxdtest.Name(t)); !errors.Is(err, fleet.ErrNotFound) {
		t.Errorf("StoragePool of a missing pool: %v, want ErrNotFound", err)
	}
}
