package admin

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Printable returns s with every character that a terminal or a browser
// would act on, rather than show, written out as an escape. Labels,
// repositories, runner names and reasons come from workflows and from
// GitHub, so anyone who can push a workflow chooses them; the CLI and the
// status page show them to an operator through Printable.
//
// Escaped: control characters (C0 with ESC, newline and tab; DEL; C1),
// format characters (the bidi overrides and isolates U+202A–U+202E and
// U+2066–U+2069, zero-width characters, the byte-order mark), separators
// other than the ASCII space, private-use and unassigned code points, and
// invalid UTF-8. Newline, tab and carriage return become \n, \t and \r;
// other characters below U+0080 and invalid bytes \xNN; the rest \uNNNN or
// \UNNNNNNNN. A backslash is left as it is: the aim is that nothing in the
// text acts on the screen, not that the text can be read back.
//
// The JSON API is not escaped: its encoder already escapes control
// characters, and programs want the values as they are.
func Printable(s string) string {
	i := 0
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if !printable(r, n) {
			break
		}
		i += n
	}
	if i == len(s) {
		return s // the usual case: nothing to escape, nothing allocated
	}
	var b strings.Builder
	b.WriteString(s[:i])
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case printable(r, n):
			b.WriteString(s[i : i+n])
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < utf8.RuneSelf:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
		i += n
	}
	return b.String()
}

// printable reports whether the rune r, n bytes long, is shown as it is:
// a letter, mark, number, punctuation, symbol or the ASCII space.
func printable(r rune, n int) bool {
	if r == utf8.RuneError && n == 1 {
		return false // an invalid byte, not a U+FFFD that was written
	}
	return unicode.IsPrint(r)
}

// Printable returns the status with every string that came from outside
// passed through Printable, for people to read.
func (st Status) Printable() Status {
	if st.Pools != nil {
		pools := make([]PoolStatus, len(st.Pools))
		for i, p := range st.Pools {
			p.Name = Printable(p.Name)
			pools[i] = p
		}
		st.Pools = pools
	}
	st.Jobs = printableJobs(st.Jobs)
	if st.Checks != nil {
		checks := make(map[string]string, len(st.Checks))
		for k, v := range st.Checks {
			checks[Printable(k)] = Printable(v)
		}
		st.Checks = checks
	}
	if st.Leader != nil {
		l := *st.Leader
		l.Replica, l.Leader = Printable(l.Replica), Printable(l.Leader)
		st.Leader = &l
	}
	if st.LastWebhook != nil {
		w := *st.LastWebhook
		w.Event = Printable(w.Event) // a header: signed body, unsigned header
		st.LastWebhook = &w
	}
	return st
}

// Printable returns the job with its strings passed through Printable.
func (j Job) Printable() Job {
	j.Pool = Printable(j.Pool)
	j.Repo = Printable(j.Repo)
	j.State = Printable(j.State)
	j.Reason = Printable(j.Reason)
	j.Runner = Printable(j.Runner)
	j.Conclusion = Printable(j.Conclusion)
	if j.Labels != nil {
		labels := make([]string, len(j.Labels))
		for i, l := range j.Labels {
			labels[i] = Printable(l)
		}
		j.Labels = labels
	}
	return j
}

// Printable returns the job and its timeline with their strings passed
// through Printable.
func (d JobDetail) Printable() JobDetail {
	d.Job = d.Job.Printable()
	if d.Events != nil {
		events := make([]Event, len(d.Events))
		for i, e := range d.Events {
			e.Kind, e.Detail = Printable(e.Kind), Printable(e.Detail)
			events[i] = e
		}
		d.Events = events
	}
	return d
}

func printableJobs(jobs []Job) []Job {
	if jobs == nil {
		return nil
	}
	out := make([]Job, len(jobs))
	for i, j := range jobs {
		out[i] = j.Printable()
	}
	return out
}
