-- Cluster members an operator drained: no launches there until undrained.
-- Kept across restarts.
CREATE TABLE drained_members (
	name TEXT PRIMARY KEY
);
