-- Every accepted workflow_job delivery, in arrival order. Written before the
-- webhook is answered; the scheduler applies them in seq order and marks them.
CREATE TABLE deliveries (
	seq             INTEGER PRIMARY KEY,
	delivery_id     TEXT    NOT NULL UNIQUE,
	action          TEXT    NOT NULL,
	job_id          INTEGER NOT NULL,
	run_id          INTEGER NOT NULL,
	installation_id INTEGER NOT NULL,
	org             TEXT    NOT NULL,
	repo            TEXT    NOT NULL,
	public          INTEGER NOT NULL,
	labels          TEXT    NOT NULL, -- JSON array
	runner_name     TEXT    NOT NULL,
	conclusion      TEXT    NOT NULL,
	received_at     INTEGER NOT NULL, -- unix ms
	applied         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX deliveries_pending ON deliveries(seq) WHERE applied = 0;

-- One row per GitHub job id: what we decided about it.
CREATE TABLE jobs (
	id              INTEGER PRIMARY KEY,
	run_id          INTEGER NOT NULL,
	installation_id INTEGER NOT NULL,
	org             TEXT    NOT NULL,
	repo            TEXT    NOT NULL,
	labels          TEXT    NOT NULL,
	pool            TEXT    NOT NULL DEFAULT '',
	state           TEXT    NOT NULL, -- queued | ignored | in_progress | completed
	reason          TEXT    NOT NULL DEFAULT '',
	runner_name     TEXT    NOT NULL DEFAULT '',
	conclusion      TEXT    NOT NULL DEFAULT '',
	delivery_id     TEXT    NOT NULL DEFAULT '',
	queued_at       INTEGER NOT NULL,
	started_at      INTEGER NOT NULL DEFAULT 0,
	completed_at    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_queued ON jobs(queued_at, id) WHERE state = 'queued';

-- One row per runner instance we decided to launch. The name is chosen and
-- stored before any outside call, so a crash mid-launch leaves a trace.
CREATE TABLE runners (
	name            TEXT    PRIMARY KEY,
	pool            TEXT    NOT NULL,
	installation_id INTEGER NOT NULL,
	org             TEXT    NOT NULL,
	job_id          INTEGER NOT NULL, -- the queued job that caused the launch; not a binding
	runner_id       INTEGER NOT NULL DEFAULT 0,
	state           TEXT    NOT NULL, -- launching | started | busy | deleting | deleted | failed
	reason          TEXT    NOT NULL DEFAULT '',
	delete_mode     TEXT    NOT NULL DEFAULT '',
	created_at      INTEGER NOT NULL,
	started_at      INTEGER NOT NULL DEFAULT 0,
	online_at       INTEGER NOT NULL DEFAULT 0,
	busy_at         INTEGER NOT NULL DEFAULT 0,
	ended_at        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runners_live ON runners(state) WHERE state NOT IN ('deleted', 'failed');
