package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
)

// memberUsage lists the commands memberCommand owns, for the main usage.
const memberUsage = `  members                  LXD's cluster members, and our runners on each
  drain --member NAME [--wait [--timeout D]]
                           launch nothing more on a cluster member; running jobs
                           finish there, idle runners there are retired. --wait
                           returns when nothing of ours is left there, so that
                           lxc cluster evacuate NAME stops nothing of ours
  undrain --member NAME    launch there again
`

// memberCommand runs the commands about LXD's members: members, and drain
// and undrain when given --member. handled is false for any other.
func memberCommand(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) (handled bool, err error) {
	switch {
	case cmd == "members":
	case (cmd == "drain" || cmd == "undrain") && slices.ContainsFunc(args, func(a string) bool {
		return a == "--member" || a == "-member" || strings.HasPrefix(a, "--member=") || strings.HasPrefix(a, "-member=")
	}):
	default:
		return false, nil
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	af := addAdminFlags(fs)
	asJSON := af.asJSON
	var member string
	var wait bool
	var timeout time.Duration
	if cmd != "members" {
		fs.StringVar(&member, "member", "", "the cluster member, as LXD names it")
	}
	if cmd == "drain" {
		fs.BoolVar(&wait, "wait", false, "return when nothing of ours is left on the member")
		fs.DurationVar(&timeout, "timeout", 6*time.Hour, "with --wait: give up after this long")
	}
	pos, err := adminParseFlags(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return true, nil
	}
	if err != nil {
		return true, usageError{err.Error()}
	}
	if len(pos) > 0 || (cmd != "members" && member == "") {
		msg := cmd + ": usage: lxd-gha-autoscaler " + cmd
		if cmd != "members" {
			msg += " --member NAME"
		}
		fmt.Fprintln(stderr, msg)
		return true, usageError{msg}
	}
	c, err := af.client()
	if err != nil {
		return true, err
	}
	if cmd == "members" {
		body, err := c.call(ctx, http.MethodGet, "/api/members")
		if err != nil {
			return true, err
		}
		if *asJSON {
			_, err := stdout.Write(body)
			return true, err
		}
		var v struct{ Members []admin.Member }
		if err := json.Unmarshal(body, &v); err != nil {
			return true, fmt.Errorf("admin API: members: %w", err)
		}
		return true, printMembers(stdout, v.Members)
	}

	body, err := c.call(ctx, http.MethodPost, "/api/members/"+url.PathEscape(member)+"/"+cmd)
	if err != nil {
		return true, err
	}
	if *asJSON && !wait {
		_, err := stdout.Write(body)
		return true, err
	}
	var m admin.Member
	if err := json.Unmarshal(body, &m); err != nil {
		return true, fmt.Errorf("admin API: %s: %w", cmd, err)
	}
	fmt.Fprintln(stdout, memberLine(m))
	if !wait || m.Empty {
		return true, nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := memberLine(m)
	for {
		select {
		case <-ctx.Done():
			return true, fmt.Errorf("drain --member %s: not empty after %s: %s", member, timeout, last)
		case <-time.After(2 * time.Second):
		}
		body, err := c.call(ctx, http.MethodGet, "/api/members")
		if err != nil {
			return true, err
		}
		var v struct{ Members []admin.Member }
		if err := json.Unmarshal(body, &v); err != nil {
			return true, fmt.Errorf("admin API: members: %w", err)
		}
		i := slices.IndexFunc(v.Members, func(x admin.Member) bool { return x.Name == member })
		if i < 0 {
			return true, fmt.Errorf("drain --member %s: LXD no longer lists the member", member)
		}
		if !v.Members[i].Drained {
			return true, fmt.Errorf("drain --member %s: the member was undrained meanwhile", member)
		}
		if line := memberLine(v.Members[i]); line != last {
			fmt.Fprintln(stdout, line)
			last = line
		}
		if v.Members[i].Empty {
			return true, nil
		}
	}
}

// memberLine says where a drain stands.
func memberLine(m admin.Member) string {
	switch {
	case !m.Drained:
		return fmt.Sprintf("member %s: not drained (%s); runners are launched there", m.Name, m.Status)
	case m.Empty:
		return fmt.Sprintf("member %s: drained and empty: nothing of ours runs there; `lxc cluster evacuate %s` stops nothing of ours", m.Name, m.Name)
	}
	return fmt.Sprintf("member %s: drained; waiting for %d busy runner(s) to finish their jobs, %d idle and %d launching to be retired, %d being deleted (%d instances of ours there)",
		m.Name, m.Busy, m.Idle, m.Launching, m.Deleting, m.Instances)
}

func printMembers(w io.Writer, ms []admin.Member) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tSTATUS\tDRAINED\tARCH\tGROUPS\tLAUNCHING\tIDLE\tBUSY\tDELETING\tEMPTY")
	for _, m := range ms {
		status := m.Status
		if m.Message != "" && m.Status != "online" {
			status += " (" + m.Message + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%t\t%s\t%s\t%d\t%d\t%d\t%d\t%t\n", m.Name, status, m.Drained, m.Architecture,
			strings.Join(m.Groups, ","), m.Launching, m.Idle, m.Busy, m.Deleting, m.Empty)
	}
	return tw.Flush()
}
