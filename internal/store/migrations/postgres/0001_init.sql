-- The SQLite schema after its four migrations, for PostgreSQL: the same
-- columns and meanings (times are unix milliseconds, labels a JSON array),
-- so that one set of queries serves both.

-- Every accepted workflow_job delivery, in arrival order. Written before the
-- webhook is answered, by whichever replica took it; the leader applies
-- them in seq order and marks them.
CREATE TABLE deliveries (
	seq             BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	delivery_id     TEXT    NOT NULL UNIQUE,
	action          TEXT    NOT NULL,
	job_id          BIGINT  NOT NULL,
	run_id          BIGINT  NOT NULL,
	installation_id BIGINT  NOT NULL,
	org             TEXT    NOT NULL,
	repo            TEXT    NOT NULL,
	public          BOOLEAN NOT NULL,
	labels          TEXT    NOT NULL,
	runner_name     TEXT    NOT NULL,
	conclusion      TEXT    NOT NULL,
	received_at     BIGINT  NOT NULL,
	applied         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX deliveries_pending ON deliveries(seq) WHERE applied = 0;

-- One row per GitHub job id: what we decided about it.
CREATE TABLE jobs (
	id              BIGINT  PRIMARY KEY,
	run_id          BIGINT  NOT NULL,
	installation_id BIGINT  NOT NULL,
	org             TEXT    NOT NULL,
	repo            TEXT    NOT NULL,
	labels          TEXT    NOT NULL,
	pool            TEXT    NOT NULL DEFAULT '',
	state           TEXT    NOT NULL,
	reason          TEXT    NOT NULL DEFAULT '',
	runner_name     TEXT    NOT NULL DEFAULT '',
	conclusion      TEXT    NOT NULL DEFAULT '',
	delivery_id     TEXT    NOT NULL DEFAULT '',
	queued_at       BIGINT  NOT NULL,
	started_at      BIGINT  NOT NULL DEFAULT 0,
	completed_at    BIGINT  NOT NULL DEFAULT 0,
	attempts        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_queued ON jobs(queued_at, id) WHERE state = 'queued';
CREATE INDEX jobs_runner ON jobs(runner_name) WHERE runner_name != '';

-- One row per runner instance we decided to launch.
CREATE TABLE runners (
	name            TEXT    PRIMARY KEY,
	pool            TEXT    NOT NULL,
	installation_id BIGINT  NOT NULL,
	org             TEXT    NOT NULL,
	job_id          BIGINT  NOT NULL,
	runner_id       BIGINT  NOT NULL DEFAULT 0,
	state           TEXT    NOT NULL,
	reason          TEXT    NOT NULL DEFAULT '',
	delete_mode     TEXT    NOT NULL DEFAULT '',
	created_at      BIGINT  NOT NULL,
	started_at      BIGINT  NOT NULL DEFAULT 0,
	online_at       BIGINT  NOT NULL DEFAULT 0,
	busy_at         BIGINT  NOT NULL DEFAULT 0,
	ended_at        BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX runners_live ON runners(state) WHERE state NOT IN ('deleted', 'failed');

-- Each job's timeline.
CREATE TABLE job_events (
	id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	job_id BIGINT NOT NULL,
	at     BIGINT NOT NULL,
	kind   TEXT   NOT NULL,
	detail TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX job_events_job ON job_events(job_id, id);
CREATE INDEX job_events_at ON job_events(at);

-- Pools an operator drained.
CREATE TABLE drained_pools (
	name TEXT PRIMARY KEY
);
