package fleet

import "time"

// Action is a workflow_job webhook's action. Only these three are acted
// on; the webhook handler answers the others (waiting, ...) and drops them.
type Action string

const (
	ActionQueued     Action = "queued"
	ActionInProgress Action = "in_progress"
	ActionCompleted  Action = "completed"
)

// Delivery is the part of an accepted workflow_job delivery that the
// scheduler needs. Only these fields are stored, not the whole body.
type Delivery struct {
	Seq            int64  // assigned by the state, in arrival order
	DeliveryID     string // X-GitHub-Delivery; a redelivery keeps it
	Action         Action
	JobID          int64
	RunID          int64
	InstallationID int64
	Org            string
	Repo           string // owner/name
	Public         bool
	Labels         []string
	RunnerName     string
	Conclusion     string
	ReceivedAt     time.Time
}

// JobState is where a job is, as the service sees it.
type JobState string

const (
	JobQueued     JobState = "queued"
	JobIgnored    JobState = "ignored"
	JobInProgress JobState = "in_progress"
	JobCompleted  JobState = "completed"
	JobAbandoned  JobState = "abandoned" // no runner came online for it, try after try
)

// JobStates lists every job state, for validating a filter.
var JobStates = []JobState{JobQueued, JobIgnored, JobInProgress, JobCompleted, JobAbandoned}

// Job is what the service knows and decided about one GitHub job.
type Job struct {
	ID             int64
	RunID          int64
	InstallationID int64
	Org            string
	Repo           string
	Labels         []string
	Pool           string // empty when ignored
	State          JobState
	Reason         string // why it was ignored or given up
	RunnerName     string
	Conclusion     string
	DeliveryID     string // the delivery that first told us about it
	Attempts       int    // runners launched for it that never came online
	QueuedAt       time.Time
	StartedAt      time.Time
	CompletedAt    time.Time
}

// Event is one step in a job's timeline.
type Event struct {
	JobID  int64
	At     time.Time
	Kind   string
	Detail string
}

// Org is an organization reached through an installation of the App.
type Org struct {
	InstallationID int64
	Login          string
}
