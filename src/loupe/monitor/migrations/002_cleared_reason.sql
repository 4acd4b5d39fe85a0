-- Why a finding was cleared when its order did not clear it by moving on: the horizon expired
-- it ("expired: no span for 24 h"), or a person dismissed or acknowledged it. Such a finding
-- stands for its order at that status: the order is not reported again while it stays there.
ALTER TABLE findings ADD COLUMN cleared_reason TEXT;
CREATE INDEX findings_closed ON findings (subject) WHERE cleared_reason IS NOT NULL;
