package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/admin"
)

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
