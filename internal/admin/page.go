package admin

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"time"
)

//go:embed templates/status.html
var templates embed.FS

var pageTmpl = template.Must(template.New("status.html").ParseFS(templates, "templates/status.html"))

// pageData is the status page's view of a Status.
type pageData struct {
	Ready  bool
	Failed []string // "check: problem", sorted
	Pools  []PoolStatus
	Jobs   []jobRow
	Now    string
	// The last webhook heard: its event, how long ago and when (RFC
	// 3339); Webhook is false before the first.
	Webhook                               bool
	WebhookEvent, WebhookAge, WebhookTime string
}

type jobRow struct {
	Job
	Age                      string // since queued
	Queued                   string // RFC 3339, UTC
	WaitSeg, BootSeg, RunSeg segment
	Total                    string
	HasTiming                bool
	StateClass               string
	ConclusionSuffix         string
}

// segment is one part of a job's time bar.
type segment struct {
	Pct     string // CSS width, e.g. "12.5"
	Seconds string // for the title attribute
	NonZero bool
}

func (h *handler) page(w http.ResponseWriter, r *http.Request) {
	st, err := h.b.Status(r.Context())
	if err != nil {
		h.log.Error().Err(err).Msg("status page")
		http.Error(w, "status: "+err.Error(), http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := pageTmpl.Execute(&buf, newPageData(st, h.clock.Now())); err != nil {
		h.log.Error().Err(err).Msg("render status page")
		http.Error(w, "render status page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// Only inline styles; no scripts, no frames, nothing fetched.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	_, _ = w.Write(buf.Bytes())
}

// newPageData escapes what it shows (see Printable): html/template stops
// markup, not the bidi controls that would make a runner's or a
// repository's name read as another.
func newPageData(st Status, now time.Time) pageData {
	st = st.Printable()
	d := pageData{Ready: st.Ready, Pools: st.Pools, Now: now.UTC().Format("2006-01-02 15:04:05Z")}
	for name, v := range st.Checks {
		if v != CheckOK {
			d.Failed = append(d.Failed, name+": "+v)
		}
	}
	slices.Sort(d.Failed)
	if w := st.LastWebhook; w != nil {
		d.Webhook, d.WebhookEvent = true, w.Event
		d.WebhookAge = FormatDuration(max(now.Sub(w.At), 0))
		d.WebhookTime = w.At.UTC().Format(time.RFC3339)
	}
	for _, j := range st.Jobs {
		d.Jobs = append(d.Jobs, newJobRow(j, now))
	}
	return d
}

func newJobRow(j Job, now time.Time) jobRow {
	row := jobRow{Job: j, StateClass: "state-" + j.State}
	if !j.QueuedAt.IsZero() {
		row.Queued = j.QueuedAt.UTC().Format(time.RFC3339)
		row.Age = FormatDuration(now.Sub(j.QueuedAt)) + " ago"
	}
	if j.Conclusion != "" {
		row.ConclusionSuffix = " (" + j.Conclusion + ")"
	}
	// Negative durations (clock skew between GitHub and us) count as zero.
	wait, boot, run := max(j.Wait, 0), max(j.Boot, 0), max(j.Run, 0)
	if j.State == "queued" {
		wait = 0 // still growing: the age says it; bars are for settled times
	}
	total := wait + boot + run
	row.HasTiming = total > 0
	row.Total = FormatDuration(total)
	seg := func(d time.Duration) segment {
		s := segment{Pct: "0", Seconds: strconv.FormatFloat(d.Seconds(), 'f', 1, 64), NonZero: d > 0}
		if total > 0 {
			s.Pct = strconv.FormatFloat(100*float64(d)/float64(total), 'f', 1, 64)
		}
		return s
	}
	row.WaitSeg, row.BootSeg, row.RunSeg = seg(wait), seg(boot), seg(run)
	return row
}

// FormatDuration formats a duration for people: "850ms", "4.2s", "3m12s", "2h05m", "3d04h".
func FormatDuration(d time.Duration) string {
	if d < 0 {
		return "-" + FormatDuration(-d)
	}
	switch {
	case d == 0:
		return "0s"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		d = d.Round(time.Hour)
		return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
	}
}
