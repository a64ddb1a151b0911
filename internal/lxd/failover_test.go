package lxd_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/canonical/lxd/shared"
	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet/fleettest"
	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/lxd"
)

// fakeCluster answers, over HTTPS with one server certificate and only to
// a client certificate, the few LXD calls the failover test makes: the
// server, the project, the instances and the cluster's members. Each
// member is one listener; stop and start make one stop answering and
// answer again on the same address.
type fakeCluster struct {
	t          *testing.T
	cert, key  []byte // the members' shared server certificate
	clientCert []byte
	clientKey  []byte

	mu      sync.Mutex
	members []*fakeMember
}

type fakeMember struct {
	name  string
	addr  string
	srv   *httptest.Server
	calls int
}

func newFakeCluster(t *testing.T, names ...string) *fakeCluster {
	t.Helper()
	cert, key, err := shared.GenerateMemCert(false, shared.CertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ccert, ckey, err := shared.GenerateMemCert(true, shared.CertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeCluster{t: t, cert: cert, key: key, clientCert: ccert, clientKey: ckey}
	for _, n := range names {
		m := &fakeMember{name: n}
		f.members = append(f.members, m)
		f.start(m, "127.0.0.1:0")
	}
	t.Cleanup(func() {
		for _, m := range f.members {
			f.stop(m.name)
		}
	})
	return f
}

func (f *fakeCluster) start(m *fakeMember, addr string) {
	f.t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		f.t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(f.cert, f.key)
	if err != nil {
		f.t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(f.handler(m))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point of one test
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	f.mu.Lock()
	m.srv, m.addr = srv, ln.Addr().String()
	f.mu.Unlock()
}

// stop makes the member stop answering: connections are refused.
func (f *fakeCluster) stop(name string) {
	m := f.member(name)
	f.mu.Lock()
	srv := m.srv
	m.srv = nil
	f.mu.Unlock()
	if srv != nil {
		srv.CloseClientConnections()
		srv.Close()
	}
}

// restart makes a stopped member answer again at its address.
func (f *fakeCluster) restart(name string) { m := f.member(name); f.start(m, m.addr) }

func (f *fakeCluster) member(name string) *fakeMember {
	for _, m := range f.members {
		if m.name == name {
			return m
		}
	}
	f.t.Fatalf("no member %s", name)
	return nil
}

func (f *fakeCluster) url(name string) string { return "https://" + f.member(name).addr }

func (f *fakeCluster) calls(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.member(name).calls
}

func (f *fakeCluster) handler(m *fakeMember) http.Handler {
	reply := func(w http.ResponseWriter, meta any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"type": "sync", "status": "Success", "status_code": 200, "metadata": meta})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		m.calls++
		var members []map[string]any
		for _, o := range f.members {
			members = append(members, map[string]any{"server_name": o.name, "url": "https://" + o.addr, "architecture": "x86_64",
				"status": "Online", "message": "Fully operational", "groups": []string{"default"}, "config": map[string]string{}})
		}
		f.mu.Unlock()
		switch r.URL.Path {
		case "/1.0":
			reply(w, map[string]any{"api_extensions": []string{"clustering", "projects", "instances"}, "auth": "trusted",
				"environment": map[string]any{"server_clustered": true, "server_name": m.name, "architectures": []string{"x86_64", "i686"},
					"project": "default", "certificate": string(f.cert)}})
		case "/1.0/projects/default":
			reply(w, map[string]any{"name": "default"})
		case "/1.0/instances":
			reply(w, []map[string]any{{"name": "gha-x", "status": "Running", "status_code": 103, "location": "m1",
				"config": map[string]string{fleet.KeyManaged: "true"}}})
		case "/1.0/cluster/members":
			reply(w, members)
		default:
			w.WriteHeader(http.StatusNotFound)
			_ = json.NewEncoder(w).Encode(map[string]any{"type": "error", "error": "not found", "error_code": 404})
		}
	})
}

func (f *fakeCluster) connect(t *testing.T, log zerolog.Logger, names ...string) *lxd.Client {
	t.Helper()
	var urls []string
	for _, n := range names {
		urls = append(urls, f.url(n))
	}
	c, err := lxd.Connect(context.Background(), lxd.Config{URLs: urls, ClientCert: f.clientCert, ClientKey: f.clientKey,
		ServerCert: f.cert, OpTimeout: 10 * time.Second, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Given several members' addresses, the client uses the first that
// answers, moves to the next when it stops answering (reads are asked
// again there at once, so the caller sees nothing), says so once, and
// reports the member offline until it answers again.
func TestFailoverBetweenMemberAddresses(t *testing.T) {
	f := newFakeCluster(t, "m1", "m2", "m3")
	ctx := context.Background()
	f.stop("m1") // the first address does not answer at start
	logs := &fleettest.LogBuffer{}
	c := f.connect(t, zerolog.New(logs), "m1", "m2", "m3")
	if got := c.Address(); got != f.url("m2") {
		t.Fatalf("address in use = %s, want the first that answers, %s", got, f.url("m2"))
	}
	f.restart("m1")

	if _, err := c.List(ctx); err != nil {
		t.Fatal(err)
	}
	before := f.calls("m3")
	f.stop("m2")
	in, err := c.List(ctx)
	if err != nil {
		t.Fatalf("List after the member in use stopped = %v, want it answered by the next", err)
	}
	if len(in) != 1 || in[0].Location != "m1" || !in[0].Running() {
		t.Fatalf("instances = %+v", in)
	}
	if c.Address() != f.url("m3") || f.calls("m3") == before {
		t.Fatalf("address in use = %s, want %s", c.Address(), f.url("m3"))
	}
	// One line for each move: at start from m1, now from m2.
	if n := strings.Count(logs.String(), "moving to the next"); n != 2 {
		t.Fatalf("%d lines about moving, want 2:\n%s", n, logs)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	topo, err := c.Topology(ctx)
	if err != nil {
		t.Fatal(err)
	}
	status := map[string]fleet.MemberStatus{}
	for _, m := range topo.Members {
		status[m.Name] = m.Status
	}
	if !topo.Clustered || status["m1"] != fleet.MemberOnline || status["m2"] != fleet.MemberOffline || status["m3"] != fleet.MemberOnline {
		t.Fatalf("topology = %+v, want m2 offline (it does not answer this client), the others online", topo)
	}
	f.restart("m2")
	if topo, err = c.Topology(ctx); err != nil {
		t.Fatal(err)
	}
	for _, m := range topo.Members {
		if m.Status != fleet.MemberOnline {
			t.Fatalf("after m2 answers again: %s is %s (%s)", m.Name, m.Status, m.Message)
		}
	}

	// Nobody answers: the caller learns that LXD is unreachable.
	for _, n := range []string{"m1", "m2", "m3"} {
		f.stop(n)
	}
	if _, err := c.List(ctx); !errors.Is(err, fleet.ErrUnreachable) {
		t.Fatalf("List with every member away = %v, want ErrUnreachable", err)
	}
	if err := c.Ping(ctx); !errors.Is(err, fleet.ErrUnreachable) {
		t.Fatalf("Ping with every member away = %v, want ErrUnreachable", err)
	}
}

// A pinned server certificate that is not the cluster's is refused, and
// the client does not take that for a member that stopped answering.
func TestWrongServerCertificate(t *testing.T) {
	f := newFakeCluster(t, "m1")
	other, _, err := shared.GenerateMemCert(false, shared.CertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = lxd.Connect(context.Background(), lxd.Config{URLs: []string{f.url("m1")}, ClientCert: f.clientCert, ClientKey: f.clientKey,
		ServerCert: other, OpTimeout: 5 * time.Second})
	if err == nil || errors.Is(err, fleet.ErrUnreachable) {
		t.Fatalf("Connect with the wrong pinned certificate = %v, want a refusal that is not ErrUnreachable", err)
	}
}
