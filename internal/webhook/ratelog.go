package webhook

import (
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/lxd-gha-autoscaler/lxd-gha-autoscaler/internal/fleet"
)

// The rejection log's rate: a burst of lines, then one a second (a token
// bucket). Lines held back are counted, and the count is logged in one
// line, logSummaryAfter after the first of them.
const (
	logBurst         = 20
	logPerSecond     = 1.0
	logSummaryAfter  = 10 * time.Second
	logSummaryPrefix = "rejected requests not logged"
)

// logLimit rate-limits the log lines of rejected requests: anyone can send
// those, and a log line each turns requests into disk writes. The webhook
// metric counts every one by result.
type logLimit struct {
	clock fleet.Clock
	log   zerolog.Logger

	mu       sync.Mutex
	tokens   float64
	last     time.Time
	held     int  // lines not logged since the last summary
	counting bool // a summary is due
}

func newLogLimit(clock fleet.Clock, log zerolog.Logger) *logLimit {
	return &logLimit{clock: clock, log: log, tokens: logBurst}
}

// allow reports whether a rejection may be logged now; if not, it counts
// it for the summary.
func (l *logLimit) allow() bool {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.After(l.last) {
		l.tokens = min(logBurst, l.tokens+now.Sub(l.last).Seconds()*logPerSecond)
	}
	l.last = now
	if l.tokens >= 1 {
		l.tokens--
		return true
	}
	l.held++
	if !l.counting {
		l.counting = true
		go l.summarize()
	}
	return false
}

// summarize logs, one period after the first line held back, how many
// were.
func (l *logLimit) summarize() {
	<-l.clock.After(logSummaryAfter)
	l.mu.Lock()
	n := l.held
	l.held, l.counting = 0, false
	l.mu.Unlock()
	l.log.Warn().Int("not_logged", n).Dur("period", logSummaryAfter).
		Msg(logSummaryPrefix + " (the metric webhooks_received_total counts them by result)")
}
