package e2e

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The load test of the webhook's memory bound: 1,000 connections keep
// sending 1 MiB bodies under a bogus X-Hub-Signature-256 (half with a
// Content-Length, half chunked) while GitHub's signed deliveries keep
// coming. The service's peak RSS must stay under 200 MB, and every signed
// delivery must be answered 202 within a second.
//
//	go test -count=1 -v -run TestWebhookFlood ./internal/e2e
//
// The environment may change the flood, for runs by hand: FLOOD_FOR (a
// duration, default 6s), FLOOD_CONNS (default 1000), FLOOD_BODY (bytes,
// default 1048576; 262144 is the largest body the service reads, so each
// one is read and its HMAC computed).
//
// The flood comes from a process of its own (this test binary, run again)
// with one core (GOMAXPROCS=1): it shares the machine with the service,
// but not the Go scheduler of the sender of signed deliveries, whose
// latency is measured.
func TestWebhookFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("load test: skipped with -short")
	}
	if os.Getenv(floodURLEnv) != "" {
		return // the flood itself runs as TestWebhookFloodSender
	}
	const (
		maxRSS     = 200 << 20
		maxLatency = time.Second
	)
	floodFor := envDuration(t, "FLOOD_FOR", 6*time.Second)
	attackers := envInt(t, "FLOOD_CONNS", 1000)
	bodySize := envInt(t, "FLOOD_BODY", 1<<20)

	e := newEnv(t, options{})
	pid := e.pid()
	rss0 := procStatus(t, pid, "VmRSS")
	cpu0, self0 := cpuSeconds(t, pid), selfCPUSeconds()
	began := time.Now()

	// The sampler: the highest VmRSS seen (VmHWM is read at the end too).
	var peakSampled atomic.Int64
	samplerDone := make(chan struct{})
	stopSampler := make(chan struct{})
	go func() {
		defer close(samplerDone)
		for {
			if v, err := readProcStatus(pid, "VmRSS"); err == nil && v > peakSampled.Load() {
				peakSampled.Store(v)
			}
			select {
			case <-stopSampler:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	flood := exec.CommandContext(e.ctx, os.Args[0], "-test.run=^TestWebhookFloodSender$", "-test.v")
	flood.Env = append(os.Environ(), "GOMAXPROCS=1", floodURLEnv+"="+e.url+"/webhook",
		"FLOOD_FOR="+floodFor.String(), "FLOOD_CONNS="+strconv.Itoa(attackers), "FLOOD_BODY="+strconv.Itoa(bodySize))
	var floodOut bytes.Buffer
	flood.Stdout, flood.Stderr = &floodOut, &floodOut
	if err := flood.Start(); err != nil {
		t.Fatal(err)
	}
	floodDone := make(chan error, 1)
	go func() { floodDone <- flood.Wait() }()

	// GitHub meanwhile: a signed delivery every 100 ms, each on a new
	// connection (as nginx in front makes them). Its labels match no pool,
	// so nothing is launched.
	github := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	var (
		mu                  sync.Mutex
		wg                  sync.WaitGroup
		latencies, connects []time.Duration
		failures            []string
	)
	deliver := func(seq int) {
		defer wg.Done()
		now := time.Now().UTC().Format(time.RFC3339)
		b := []byte(fmt.Sprintf(`{"action":"queued","workflow_job":{"id":%d,"run_id":1,"labels":["self-hosted","flood-check"],`+
			`"status":"queued","created_at":%q,"started_at":%q},`+
			`"repository":{"full_name":"acme/app","visibility":"private","private":true},`+
			`"organization":{"login":"acme"},"installation":{"id":7}}`, 900000+seq, now, now))
		m := hmac.New(sha256.New, e.secret)
		m.Write(b)
		start := time.Now()
		var connected time.Duration
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(e.ctx, &httptrace.ClientTrace{
			GotConn: func(httptrace.GotConnInfo) { connected = time.Since(start) },
		}), http.MethodPost, e.url+"/webhook", bytes.NewReader(b))
		req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(m.Sum(nil)))
		req.Header.Set("X-GitHub-Event", "workflow_job")
		req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("00000000-0000-4000-8000-%012d", seq))
		req.Header.Set("Content-Type", "application/json")
		resp, err := github.Do(req)
		took := time.Since(start)
		mu.Lock()
		defer mu.Unlock()
		connects = append(connects, connected)
		if err != nil {
			failures = append(failures, fmt.Sprintf("delivery %d: %v after %v", seq, err, took))
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		latencies = append(latencies, took)
		if resp.StatusCode != http.StatusAccepted || took > maxLatency {
			failures = append(failures, fmt.Sprintf("delivery %d: status %d after %v", seq, resp.StatusCode, took))
		}
	}
	time.Sleep(time.Second) // let the flood build up
	tick := time.NewTicker(100 * time.Millisecond)
	for seq := 1; ; seq++ {
		wg.Add(1)
		go deliver(seq)
		select {
		case <-tick.C:
			continue
		case err := <-floodDone:
			if err != nil {
				t.Errorf("the flood failed: %v\n%s", err, floodOut.String())
			}
		}
		break
	}
	tick.Stop()
	wg.Wait()
	close(stopSampler)
	<-samplerDone
	wall := time.Since(began)
	cpu, self := cpuSeconds(t, pid)-cpu0, selfCPUSeconds()-self0
	hwm := procStatus(t, pid, "VmHWM")
	rssAfter := procStatus(t, pid, "VmRSS")

	var statuses map[string]int
	for _, line := range strings.Split(floodOut.String(), "\n") {
		if js, ok := strings.CutPrefix(strings.TrimSpace(line), floodResultPrefix); ok {
			if err := json.Unmarshal([]byte(js), &statuses); err != nil {
				t.Fatal(err)
			}
		}
	}
	total := 0
	for _, n := range statuses {
		total += n
	}
	slices.Sort(latencies)
	slices.Sort(connects)
	var p50, p90, worst, connWorst time.Duration
	if n := len(latencies); n > 0 {
		p50, p90, worst = latencies[n/2], latencies[n*9/10], latencies[n-1]
	}
	if len(connects) > 0 {
		connWorst = connects[len(connects)-1]
	}
	t.Logf("flood: %d connections for %v, %d requests of %d bytes with a bogus signature; answers %v",
		attackers, floodFor, total, bodySize, statuses)
	t.Logf("CPU over %v: service %.1f s, flood %.1f s, this test %.1f s; load average %s",
		wall.Round(100*time.Millisecond), cpu, childCPUSeconds(), self, loadAverage())
	t.Logf("service RSS: %.1f MB at start, peak %.1f MB (VmHWM; %.1f MB highest sampled), %.1f MB after",
		mb(rss0), mb(hwm), mb(peakSampled.Load()), mb(rssAfter))
	t.Logf("signed deliveries during the flood: %d answered, p50 %v, p90 %v, max %v (connecting: max %v)",
		len(latencies), p50.Round(time.Millisecond), p90.Round(time.Millisecond), worst.Round(time.Millisecond),
		connWorst.Round(time.Millisecond))
	m := e.scrape()
	results := map[string]float64{}
	for _, r := range []string{"accepted", "bad_signature", "too_large", "busy", "bad_request"} {
		results[r] = sum(m, metricPrefix+"webhooks_received_total", `result="`+r+`"`)
	}
	t.Logf("webhooks_received_total by result: %v", results)

	if total < attackers {
		t.Errorf("only %d flood requests were answered or failed: the flood did not happen\n%s", total, floodOut.String())
	}
	if hwm >= maxRSS {
		t.Errorf("peak RSS %.1f MB, want under %.0f MB", mb(hwm), mb(maxRSS))
	}
	if len(latencies) < 20 {
		t.Errorf("only %d signed deliveries answered during the flood", len(latencies))
	}
	for _, f := range failures {
		t.Errorf("signed delivery not accepted within %v: %s", maxLatency, f)
	}
}

const (
	floodURLEnv       = "E2E_FLOOD_URL"
	floodResultPrefix = "FLOOD-RESULT "
)

// TestWebhookFloodSender is TestWebhookFlood's flood, in a process of its
// own; it does nothing unless that test runs it.
func TestWebhookFloodSender(t *testing.T) {
	url := os.Getenv(floodURLEnv)
	if url == "" {
		t.Skip("run by TestWebhookFlood")
	}
	floodFor := envDuration(t, "FLOOD_FOR", 6*time.Second)
	attackers := envInt(t, "FLOOD_CONNS", 1000)
	bodySize := envInt(t, "FLOOD_BODY", 1<<20)
	ctx, cancel := context.WithTimeout(context.Background(), floodFor)
	defer cancel()
	body := bytes.Repeat([]byte("x"), bodySize)
	bogus := "sha256=" + strings.Repeat("0", 64)
	attack := &http.Transport{
		MaxIdleConnsPerHost: attackers,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}
	defer attack.CloseIdleConnections()
	var (
		mu       sync.Mutex
		statuses = map[string]int{}
		wg       sync.WaitGroup
	)
	count := func(k string) {
		mu.Lock()
		statuses[k]++
		mu.Unlock()
	}
	for i := range attackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
				if i%2 == 1 {
					req.ContentLength = -1 // chunked: only reading tells the size
				}
				req.Header.Set("X-Hub-Signature-256", bogus)
				req.Header.Set("X-GitHub-Event", "workflow_job")
				req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("flood-%d-%d", i, n))
				resp, err := attack.RoundTrip(req)
				if err != nil {
					if ctx.Err() == nil {
						count("error")
						time.Sleep(10 * time.Millisecond)
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				count(strconv.Itoa(resp.StatusCode))
			}
		}()
	}
	wg.Wait()
	out, _ := json.Marshal(statuses)
	fmt.Println(floodResultPrefix + string(out))
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return d
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, s)
	}
	return n
}

const metricPrefix = "lxd_gha_autoscaler_"

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// pid is the running service's process id.
func (e *env) pid() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd == nil {
		e.t.Fatal("service not running")
	}
	return e.cmd.Process.Pid
}

// procStatus reads a "kB" field of /proc/PID/status, in bytes.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	v, err := readProcStatus(pid, field)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func readProcStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// cpuSeconds is the user and system CPU time process pid has used.
func cpuSeconds(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

func selfCPUSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func loadAverage() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func childCPUSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
