-- Runners launched for a job that never came online: counted so that a
-- job whose runners never register is given up after a few tries.
ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
