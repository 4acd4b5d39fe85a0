-- A finding devops dismissed (a false alarm, or one in hand elsewhere): cleared with the reason
-- "dismissed by <who>: <why>", and left out of its incident's times. An incident whose every
-- finding was dismissed resolves without counting toward MTTD or MTTR.
ALTER TABLE findings ADD COLUMN dismissed BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE incidents ADD COLUMN dismissed BOOLEAN NOT NULL DEFAULT false;
