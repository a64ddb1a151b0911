package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
)

// adminPrint prints an API answer for people. Every string in it goes
// through admin.Printable first: labels, repositories, runner names and
// reasons come from workflows, and a terminal would act on the escape
// sequences, newlines and bidi controls they may hold.
func adminPrint(w io.Writer, cmd string, body []byte) error {
	switch cmd {
	case "status":
		var st admin.Status
		if err := json.Unmarshal(body, &st); err != nil {
			return fmt.Errorf("admin API: status: %w", err)
		}
		return adminPrintStatus(w, st.Printable())
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
		for i, j := range v.Jobs {
			v.Jobs[i] = j.Printable()
		}
		return adminPrintJobs(w, v.Jobs, true)
	case "job":
		var d admin.JobDetail
		if err := json.Unmarshal(body, &d); err != nil {
			return fmt.Errorf("admin API: job: %w", err)
		}
		return adminPrintJob(w, d.Printable())
	case "drain", "undrain":
		var v struct {
			Pool     string `json:"pool"`
			Draining bool   `json:"draining"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return fmt.Errorf("admin API: %s: %w", cmd, err)
		}
		if v.Draining {
			_, err := fmt.Fprintf(w, "pool %s: draining\n", admin.Printable(v.Pool))
			return err
		}
		_, err := fmt.Fprintf(w, "pool %s: not draining\n", admin.Printable(v.Pool))
		return err
	case "instance":
		var v struct {
			Instance string `json:"instance"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return fmt.Errorf("admin API: instance delete: %w", err)
		}
		_, err := fmt.Fprintf(w, "instance %s: deleted\n", admin.Printable(v.Instance))
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
	if w := st.LastWebhook; w != nil {
		fmt.Fprintf(ew, "last webhook received at %s (%s)\n", adminStamp(w.At), w.Event)
	} else {
		fmt.Fprintln(ew, "no webhook received yet: check the App's webhook URL, the proxy and the webhook secret (lxd-gha-autoscaler doctor --webhook-url URL)")
	}
	if l := st.Leader; l != nil {
		switch {
		case l.Leading:
			fmt.Fprintf(ew, "replica %s leads, since %s\n", l.Replica, adminStamp(l.Since))
		case l.Leader == "":
			fmt.Fprintf(ew, "replica %s follows; no replica leads now\n", l.Replica)
		default:
			fmt.Fprintf(ew, "replica %s follows; %s leads, since %s\n", l.Replica, l.Leader, adminStamp(l.Since))
		}
	}
	fmt.Fprintln(ew)
	tw := adminTable(ew, 2)
	fmt.Fprintln(tw, "POOL\tQUEUED\tLAUNCHING\tIDLE\tBUSY\tPREPARED\tMAX\tDRAINING")
	for _, p := range st.Pools {
		maxs := "global"
		if p.Max > 0 {
			maxs = strconv.Itoa(p.Max)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", p.Name, p.Queued, p.Launching, p.Idle, p.Busy, p.Prepared, maxs, adminYes(p.Draining))
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
// waited so far, by the service's clock.
func adminPrintJobs(w io.Writer, jobs []admin.Job, long bool) error {
	tw := adminTable(w, 2)
	hdr := "JOB\tPOOL\tSTATE\tWAIT\tBOOT\tRUN\tREPO\tRUNNER\tREASON"
	if long {
		hdr = "JOB\tQUEUED\tPOOL\tSTATE\tWAIT\tBOOT\tRUN\tREPO\tLABELS\tRUNNER\tREASON"
	}
	fmt.Fprintln(tw, hdr)
	for _, j := range jobs {
		wait := j.Wait
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
	if d.State == "queued" && d.Wait > 0 {
		wait += " so far"
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
