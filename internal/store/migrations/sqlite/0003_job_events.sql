-- Each job's timeline: what happened to it and why, for operators.
CREATE TABLE job_events (
	id     INTEGER PRIMARY KEY,
	job_id INTEGER NOT NULL,
	at     INTEGER NOT NULL, -- unix ms
	kind   TEXT    NOT NULL,
	detail TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX job_events_job ON job_events(job_id, id);
CREATE INDEX job_events_at ON job_events(at);
CREATE INDEX jobs_runner ON jobs(runner_name) WHERE runner_name != '';
