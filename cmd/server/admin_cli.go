package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"

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
                           each takes --config FILE (default
                           $` + ConfigEnv + `): the service's config,
                           for its admin listener, token and certificate; or
                           --admin ADDR (unix:/path, host:port or
                           https://host:port; default
                           ` + admin.DefaultListen + `),
                           --token-file FILE and --ca-file FILE; and --json
`

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
	af := addAdminFlags(fs)
	asJSON := af.asJSON
	var pool, state string
	var limit int
	if cmd == "jobs" {
		fs.StringVar(&pool, "pool", "", "only this pool's jobs")
		fs.StringVar(&state, "state", "", "only jobs in this state: queued, ignored, in_progress, completed or abandoned")
		fs.IntVar(&limit, "limit", 0, "at most this many jobs (the service's default: 50)")
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: lxd-gha-autoscaler %s [--config FILE | --admin ADDR [--token-file FILE] [--ca-file FILE]] [--json]\n", synopsis)
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

	c, err := af.client()
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
