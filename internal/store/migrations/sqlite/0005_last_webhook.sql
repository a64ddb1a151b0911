-- The latest webhook that arrived with a valid signature, of any event
-- (ping included): one row. It shows a wrong proxy or secret before the
-- first job does.
CREATE TABLE last_webhook (
	id    INTEGER PRIMARY KEY CHECK (id = 1),
	event TEXT    NOT NULL,
	at    INTEGER NOT NULL
);
