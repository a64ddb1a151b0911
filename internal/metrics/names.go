package metrics

// Every metric this package registers, by its full name. The dashboard and
// the alert rules in deployments/ use these names; a test checks that they
// use no other.
const (
	// Prefix starts every name below.
	Prefix = "lxd_gha_autoscaler_"

	// BuildInfo is 1, labelled with version and goversion.
	BuildInfo = Prefix + "build_info"

	// Webhooks.
	WebhooksReceivedTotal    = Prefix + "webhooks_received_total"    // {event,result}
	WebhookRedeliveriesTotal = Prefix + "webhook_redeliveries_total" // redeliveries asked of GitHub

	// Jobs.
	JobsQueuedTotal     = Prefix + "jobs_queued_total"      // {pool}
	JobsIgnoredTotal    = Prefix + "jobs_ignored_total"     // {reason}
	JobsStartedTotal    = Prefix + "jobs_started_total"     // {pool}
	JobsCompletedTotal  = Prefix + "jobs_completed_total"   // {pool,conclusion}
	JobQueueWaitSeconds = Prefix + "job_queue_wait_seconds" // histogram {pool}: queued → in_progress
	JobRunSeconds       = Prefix + "job_run_seconds"        // histogram {pool}: in_progress → completed

	// Runners and their instances.
	LaunchesTotal         = Prefix + "launches_total"          // {pool,result}
	ImageBuildsTotal      = Prefix + "image_builds_total"      // {image,result}
	InstanceLaunchSeconds = Prefix + "instance_launch_seconds" // histogram {pool}: LXD create + start, successful launches only
	RunnerReadySeconds    = Prefix + "runner_ready_seconds"    // histogram {pool}: launch → online/busy
	TeardownsTotal        = Prefix + "teardowns_total"         // {pool,reason}

	// Reconciliation.
	ReconcileActionsTotal         = Prefix + "reconcile_actions_total" // {kind}
	ReconcileErrorsTotal          = Prefix + "reconcile_errors_total"
	LastReconcileTimestampSeconds = Prefix + "last_reconcile_timestamp_seconds"

	// Read from the state at scrape time (see StateSnapshot).
	JobsByState            = Prefix + "jobs"                      // gauge {pool,state}
	InstancesByState       = Prefix + "instances"                 // gauge {pool,state}
	JobOldestQueuedSeconds = Prefix + "job_oldest_queued_seconds" // gauge {pool}

	// GitHub API, per HTTP attempt (see GitHubTransport).
	GitHubRequestsTotal          = Prefix + "github_requests_total"           // {endpoint,method,status}
	GitHubRequestDurationSeconds = Prefix + "github_request_duration_seconds" // histogram {endpoint}
	GitHubRateLimitRemaining     = Prefix + "github_rate_limit_remaining"     // gauge, last X-RateLimit-Remaining seen

	// Replicas on a shared state (see internal/leader).
	LeaderRole         = Prefix + "leader"               // gauge: 1 while this replica leads, else 0
	LeaderChangesTotal = Prefix + "leader_changes_total" // terms this replica started
	LeaseRenewalsTotal = Prefix + "lease_renewals_total" // {result}: ok, error, lost

	// LXD (see InstrumentInstances).
	LXDOperationsTotal          = Prefix + "lxd_operations_total"           // {op,result}
	LXDOperationDurationSeconds = Prefix + "lxd_operation_duration_seconds" // histogram {op}
)

// Label values this package itself produces.
const (
	ResultOK    = "ok"
	ResultError = "error"

	// StatusError is the github_requests_total status when no HTTP answer came.
	StatusError = "error"
	// EndpointOther is the endpoint of a path matching no known route.
	EndpointOther = "other"

	OpCreate = "create"
	OpDelete = "delete"
	OpList   = "list"
	OpGet    = "get"
	// OpPrepare makes a prepared instance (created, not started);
	// OpStartPrepared gives one its runner and starts it; OpImage reads
	// what an image alias stands for.
	OpPrepare       = "prepare"
	OpStartPrepared = "start_prepared"
	OpImage         = "image"
)

// Names returns every metric name above, for checks of dashboards and rules.
func Names() []string {
	return []string{
		BuildInfo,
		WebhooksReceivedTotal, WebhookRedeliveriesTotal,
		JobsQueuedTotal, JobsIgnoredTotal, JobsStartedTotal, JobsCompletedTotal, JobQueueWaitSeconds, JobRunSeconds,
		LaunchesTotal, InstanceLaunchSeconds, RunnerReadySeconds, TeardownsTotal, ImageBuildsTotal,
		ReconcileActionsTotal, ReconcileErrorsTotal, LastReconcileTimestampSeconds,
		JobsByState, InstancesByState, JobOldestQueuedSeconds,
		GitHubRequestsTotal, GitHubRequestDurationSeconds, GitHubRateLimitRemaining,
		LXDOperationsTotal, LXDOperationDurationSeconds,
		LeaderRole, LeaderChangesTotal, LeaseRenewalsTotal,
	}
}
