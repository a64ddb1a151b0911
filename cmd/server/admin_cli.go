package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
)

// adminUsage lists the commands adminCommand owns, for the main usage.
const adminUsage = `  status                   pools, readiness and the last jobs of a running service
  jobs [--pool P] [--state S] [--limit N]
                           list jobs, newest first
  job ID                   one job: where its time went, and its timeline
  drain POOL               stop launching runners for a pool
  undrain POOL             launch for the pool again
  instance delete NAME     delete one of our instances
                           each takes --admin ADDR (unix:/path or host:port,
                           default ` + admin.DefaultListen + `),
                           --token-file FILE and --json
`

// adminNow is the clock for "waiting so far"; tests set it.
var adminNow = time.Now

// adminCommand runs the commands that talk to the admin API of a running
// service. handled is false for a command it does not own.
func adminCommand(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) (handled bool, err error) {
	var synopsis string
	switch cmd {
	case "status":
		synopsis = "status"
	case "jobs":
		synopsis = "jobs [--pool P] [--state S] [--limit N]"
	case "job":
		synopsis = "job ID"
	case "drain", "undrain":
		synopsis = cmd + " POOL"
	case "instance":
		synopsis = "instance delete NAME"
	default:
		return false, nil
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("admin", admin.DefaultListen, "admin API address: unix:/path or host:port")
	tokenFile := fs.String("token-file", "", "file holding the admin token")
	asJSON := fs.Bool("json", false, "print the API's JSON as is")
	var pool, state string
	var limit int
	if cmd == "jobs" {
		fs.StringVar(&pool, "pool", "", "only this pool's jobs")
		fs.StringVar(&state, "state", "", "only jobs in this state: queued, ignored, in_progress, completed or abandoned")
		fs.IntVar(&limit, "limit", 0, "at most this many jobs (the service's default: 50)")
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: lxd-gha-autoscaler %s [--admin ADDR] [--token-file FILE] [--json]\n", synopsis)
		fs.PrintDefaults()
	}
	pos, err := adminParseFlags(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return true, nil
	}
	if err != nil {
		return true, usageError{err.Error()}
	}
	// The positional arguments each command wants.
	want := map[string]int{"status": 0, "jobs": 0, "job": 1, "drain": 1, "undrain": 1, "instance": 2}[cmd]
	if len(pos) != want || (cmd == "instance" && pos[0] != "delete") || slices.Contains(pos, "") {
		msg := fmt.Sprintf("%s: usage: lxd-gha-autoscaler %s", cmd, synopsis)
		fmt.Fprintln(stderr, msg)
		return true, usageError{msg}
	}
	method, path := http.MethodGet, ""
	switch cmd {
	case "status":
		path = "/api/status"
	case "jobs":
		q := url.Values{}
		if pool != "" {
			q.Set("pool", pool)
		}
		if state != "" {
			q.Set("state", state)
		}
		if limit != 0 {
			q.Set("limit", strconv.Itoa(limit))
		}
		path = "/api/jobs"
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
	case "job":
		id, err := strconv.ParseInt(pos[0], 10, 64)
		if err != nil || id <= 0 {
			msg := fmt.Sprintf("job: %q is not a job id", pos[0])
			fmt.Fprintln(stderr, msg)
			return true, usageError{msg}
		}
		path = "/api/jobs/" + strconv.FormatInt(id, 10)
	case "drain", "undrain":
		method, path = http.MethodPost, "/api/pools/"+url.PathEscape(pos[0])+"/"+cmd
	case "instance":
		method, path = http.MethodDelete, "/api/instances/"+url.PathEscape(pos[1])
	}

	c, err := newAdminClient(*addr, *tokenFile)
	if err != nil {
		return true, err
	}
	body, err := c.call(ctx, method, path)
	if err != nil {
		return true, err
	}
	if *asJSON {
		_, err := stdout.Write(body)
		return true, err
	}
	return true, adminPrint(stdout, cmd, body)
}

// adminParseFlags parses flags anywhere among the arguments, so that
// "job 42 --json" works as well as "job --json 42", and returns the others.
func adminParseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil // "--": the rest is not flags
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

type adminClient struct {
	addr  string // as the user gave it, for messages
	base  string
	token string
	http  *http.Client
}

func newAdminClient(addr, tokenFile string) (*adminClient, error) {
	c := &adminClient{addr: addr, http: &http.Client{Timeout: 30 * time.Second}}
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("admin token: %w", err)
		}
		c.token = strings.TrimSpace(string(b))
		if c.token == "" {
			return nil, fmt.Errorf("admin token: %s is empty", tokenFile)
		}
	}
	switch path, isUnix := strings.CutPrefix(addr, admin.UnixPrefix); {
	case isUnix:
		if path == "" {
			return nil, fmt.Errorf("--admin %q: empty socket path", addr)
		}
		c.base = "http://admin" // the host is not used: every request dials the socket
		c.http.Transport = &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
		}
	case strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://"):
		c.base = strings.TrimRight(addr, "/")
	default:
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("--admin %q: want unix:/path or host:port", addr)
		}
		c.base = "http://" + addr
	}
	return c, nil
}

// call sends one request and returns the body of a 2xx answer; any other
// answer becomes an error carrying the API's message.
func (c *adminClient) call(ctx context.Context, method, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("admin API: %w", err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// The URL is ours, not the user's: keep only the cause.
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("admin API at %s (is the service running? see --admin): %w", c.addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("admin API at %s: read answer: %w", c.addr, err)
	}
	if resp.StatusCode/100 == 2 {
		return body, nil
	}
	var e struct {
		Error string `json:"error"`
	}
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	if len(msg) > 500 {
		msg = msg[:500] + "…"
	}
	if resp.StatusCode == http.StatusUnauthorized {
		msg += "; pass --token-file"
	}
	return nil, fmt.Errorf("%s (HTTP %d)", msg, resp.StatusCode)
}

// adminPrint prints an API answer for people.
func adminPrint(w io.Writer, cmd string, body []byte) error {
	switch cmd {
	case "status":
		var st admin.Status
		if err := json.Unmarshal(body, &st); err != nil {
			return fmt.Errorf("admin API: status: %w", err)
		}
		return adminPrintStatus(w, st)
	case "jobs":
		var v struct {
			Jobs []admin.Job `json:"jobs"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return fmt.Errorf("admin API: jobs: %w", err)
		}
		if len(v.Jobs) == 0 {
			_, err := fmt.Fprintln(w, "no jobs")
			return err
		}
		return adminPrintJobs(w, v.Jobs, true)
	case "job":
		var d admin.JobDetail
		if err := json.Unmarshal(body, &d); err != nil {
			return fmt.Errorf("admin API: job: %w", err)
		}
		return adminPrintJob(w, d)
	case "drain", "undrain":
		var v struct {
			Pool     string `json:"pool"`
			Draining bool   `json:"draining"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return fmt.Errorf("admin API: %s: %w", cmd, err)
		}
		if v.Draining {
			_, err := fmt.Fprintf(w, "pool %s: draining\n", v.Pool)
			return err
		}
		_, err := fmt.Fprintf(w, "pool %s: not draining\n", v.Pool)
		return err
	case "instance":
		var v struct {
			Instance string `json:"instance"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return fmt.Errorf("admin API: instance delete: %w", err)
		}
		_, err := fmt.Fprintf(w, "instance %s: deleted\n", v.Instance)
		return err
	}
	return fmt.Errorf("no output for %s", cmd)
}

func adminPrintStatus(w io.Writer, st admin.Status) error {
	ew := &adminErrWriter{w: w}
	if st.Ready {
		fmt.Fprintln(ew, "ready")
	} else {
		fmt.Fprintln(ew, "not ready:")
		names := make([]string, 0, len(st.Checks))
		for name := range st.Checks {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			if v := st.Checks[name]; v != admin.CheckOK {
				fmt.Fprintf(ew, "  %s: %s\n", name, v)
			}
		}
	}
	fmt.Fprintln(ew)
	tw := adminTable(ew, 2)
	fmt.Fprintln(tw, "POOL\tQUEUED\tLAUNCHING\tIDLE\tBUSY\tMAX\tDRAINING")
	for _, p := range st.Pools {
		maxs := "global"
		if p.Max > 0 {
			maxs = strconv.Itoa(p.Max)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\n", p.Name, p.Queued, p.Launching, p.Idle, p.Busy, maxs, adminYes(p.Draining))
	}
	if len(st.Pools) == 0 {
		fmt.Fprintln(tw, "(no pools)")
	}
	tw.Flush()
	fmt.Fprintln(ew)
	if len(st.Jobs) == 0 {
		fmt.Fprintln(ew, "no jobs yet")
		return ew.err
	}
	fmt.Fprintln(ew, "last jobs:")
	if err := adminPrintJobs(ew, st.Jobs, false); err != nil {
		return err
	}
	return ew.err
}

// adminPrintJobs prints a job table. A queued job's wait is how long it has
// waited so far.
func adminPrintJobs(w io.Writer, jobs []admin.Job, long bool) error {
	tw := adminTable(w, 2)
	hdr := "JOB\tPOOL\tSTATE\tWAIT\tBOOT\tRUN\tREPO\tRUNNER\tREASON"
	if long {
		hdr = "JOB\tQUEUED\tPOOL\tSTATE\tWAIT\tBOOT\tRUN\tREPO\tLABELS\tRUNNER\tREASON"
	}
	fmt.Fprintln(tw, hdr)
	now := adminNow()
	for _, j := range jobs {
		wait := j.Wait
		if wait == 0 && j.State == "queued" && !j.QueuedAt.IsZero() {
			wait = now.Sub(j.QueuedAt)
		}
		state := j.State
		if j.Conclusion != "" {
			state += " (" + j.Conclusion + ")"
		}
		cols := []string{strconv.FormatInt(j.ID, 10), adminDash(j.Pool), state, adminDur(wait), adminDur(j.Boot), adminDur(j.Run), adminDash(j.Repo)}
		if long {
			cols = slices.Insert(cols, 1, adminStamp(j.QueuedAt))
			cols = append(cols, adminDash(strings.Join(j.Labels, ",")))
		}
		cols = append(cols, adminDash(j.Runner), j.Reason)
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	return tw.Flush()
}

func adminPrintJob(w io.Writer, d admin.JobDetail) error {
	ew := &adminErrWriter{w: w}
	state := d.State
	if d.Conclusion != "" {
		state += " (" + d.Conclusion + ")"
	}
	fmt.Fprintf(ew, "job %d  %s  %s\n", d.ID, adminDash(d.Repo), state)
	tw := adminTable(ew, 1)
	fmt.Fprintf(tw, "  pool:\t%s\n", adminDash(d.Pool))
	fmt.Fprintf(tw, "  labels:\t%s\n", adminDash(strings.Join(d.Labels, ", ")))
	if d.Runner != "" {
		fmt.Fprintf(tw, "  runner:\t%s\n", d.Runner)
	}
	if d.Reason != "" {
		fmt.Fprintf(tw, "  reason:\t%s\n", d.Reason)
	}
	wait := adminDur(d.Wait)
	if d.Wait == 0 && d.State == "queued" && !d.QueuedAt.IsZero() {
		wait = admin.FormatDuration(adminNow().Sub(d.QueuedAt)) + " so far"
	}
	fmt.Fprintf(tw, "  time:\twait %s, boot %s, run %s\n", wait, adminDur(d.Boot), adminDur(d.Run))
	fmt.Fprintf(tw, "  queued:\t%s\n", adminStamp(d.QueuedAt))
	tw.Flush()
	if len(d.Events) == 0 {
		fmt.Fprintln(ew, "\nno timeline recorded")
		return ew.err
	}
	base := d.QueuedAt
	if base.IsZero() {
		base = d.Events[0].At
	}
	fmt.Fprintln(ew, "\ntimeline (offsets from queued):")
	// Offsets right-aligned, kinds left-aligned.
	offs := make([]string, len(d.Events))
	ow, kw := 0, 0
	for i, e := range d.Events {
		offs[i] = adminOffset(e.At.Sub(base))
		ow, kw = max(ow, len(offs[i])), max(kw, len(e.Kind))
	}
	for i, e := range d.Events {
		line := fmt.Sprintf("  %*s  %-*s  %s", ow, offs[i], kw, e.Kind, e.Detail)
		fmt.Fprintln(ew, strings.TrimRight(line, " "))
	}
	return ew.err
}

// adminOffset formats a time since queued: "+0.005s", "+8.00s", "+3m12s".
func adminOffset(d time.Duration) string {
	sign := "+"
	if d < 0 {
		sign, d = "-", -d
	}
	switch {
	case d < time.Second:
		return fmt.Sprintf("%s%.3fs", sign, d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%s%.2fs", sign, d.Seconds())
	}
	return sign + admin.FormatDuration(d)
}

func adminDur(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return admin.FormatDuration(d)
}

func adminStamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func adminDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func adminYes(b bool) string {
	if b {
		return "yes"
	}
	return ""
}

// adminTableWriter aligns tab-separated cells, without the trailing blanks
// that an empty last column leaves.
type adminTableWriter struct {
	*tabwriter.Writer
	buf bytes.Buffer
	out io.Writer
}

func adminTable(w io.Writer, padding int) *adminTableWriter {
	t := &adminTableWriter{out: w}
	t.Writer = tabwriter.NewWriter(&t.buf, 0, 0, padding, ' ', 0)
	return t
}

func (t *adminTableWriter) Flush() error {
	if err := t.Writer.Flush(); err != nil {
		return err
	}
	var out bytes.Buffer
	for line := range strings.Lines(t.buf.String()) {
		out.WriteString(strings.TrimRight(line, " \n"))
		out.WriteByte('\n')
	}
	t.buf.Reset()
	_, err := t.out.Write(out.Bytes())
	return err
}

// adminErrWriter keeps the first write error, so printing code can check once.
type adminErrWriter struct {
	w   io.Writer
	err error
}

func (e *adminErrWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}
