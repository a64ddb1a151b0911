-- The leadership of the replicas: one row. A replica leads while
-- expires_at, computed by the database's clock, is in the future; each
-- new leadership takes a new epoch, and every transaction of the leader
-- checks that its epoch still holds (fencing).
CREATE TABLE leader_lease (
	id          INTEGER     PRIMARY KEY CHECK (id = 1),
	holder      TEXT        NOT NULL,
	epoch       BIGINT      NOT NULL,
	acquired_at TIMESTAMPTZ NOT NULL,
	expires_at  TIMESTAMPTZ NOT NULL
);
INSERT INTO leader_lease (id, holder, epoch, acquired_at, expires_at) VALUES (1, '', 0, '-infinity', '-infinity');
