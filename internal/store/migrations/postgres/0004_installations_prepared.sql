-- The App's installations, as last heard of: from GitHub's list of
-- installations (at start and on an interval) or an installation webhook
-- (any replica records it). Warm pools keep runners for the active ones.
CREATE TABLE installations (
	id    BIGINT PRIMARY KEY,
	login TEXT    NOT NULL,
	state TEXT    NOT NULL, -- active | suspended | deleted
	at    BIGINT NOT NULL  -- unix ms; an earlier word changes nothing
);

-- Prepared instances: created and stopped ahead of any job, holding no
-- secret and no registration. Not runners: a job that takes one turns its
-- row into a runner row of the same name.
CREATE TABLE prepared_instances (
	name       TEXT    PRIMARY KEY,
	pool       TEXT    NOT NULL,
	image      TEXT    NOT NULL DEFAULT '', -- fingerprint it was made from
	member     TEXT    NOT NULL DEFAULT '',
	state      TEXT    NOT NULL, -- creating | ready | deleting
	reason     TEXT    NOT NULL DEFAULT '',
	created_at BIGINT NOT NULL
);
