-- Pools an operator drained: no launches until undrained. Kept across restarts.
CREATE TABLE drained_pools (
	name TEXT PRIMARY KEY
);
