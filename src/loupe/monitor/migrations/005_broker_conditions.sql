-- What the broker shows wrong now (broker.py: messages no queue is bound for, a work queue with
-- messages and no consumer), by the subject of the finding it makes, and since when detection
-- has seen it hold. A finding closed for good (dismissed) while its condition holds is not made
-- again until the condition clears: the row goes, and a new one starts it afresh.
CREATE TABLE broker_conditions (
    subject TEXT PRIMARY KEY,
    since   TIMESTAMPTZ NOT NULL
);
