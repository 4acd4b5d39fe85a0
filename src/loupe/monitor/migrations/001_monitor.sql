-- The monitor's state: what spans said about each order, and what detection made of it.

-- Every span that moved an order, kept once however often it arrives (trace id, span id).
-- The one that began first per order and status is the move itself; later ones are the other
-- services' copies following it (a service that "has" the order at that status). By start,
-- not end: the move's span may outlast a copy's (it publishes the event, then finishes).
CREATE TABLE transitions (
    trace_id       TEXT NOT NULL,
    span_id        TEXT NOT NULL,
    order_id       TEXT NOT NULL,
    status_from    TEXT NOT NULL,
    status_to      TEXT NOT NULL,
    began          TIMESTAMPTZ NOT NULL,
    at             TIMESTAMPTZ NOT NULL,
    service        TEXT NOT NULL,
    operation      TEXT NOT NULL,
    source         TEXT,
    failure_reason TEXT,
    links          JSONB NOT NULL DEFAULT '[]',
    received_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX transitions_order ON transitions (order_id, at);

-- Failed spans: on an order's path (order_id set) or not (they still count against uptime).
CREATE TABLE errors (
    trace_id      TEXT NOT NULL,
    span_id       TEXT NOT NULL,
    order_id      TEXT,
    at            TIMESTAMPTZ NOT NULL,
    service       TEXT NOT NULL,
    kind          TEXT NOT NULL,
    operation     TEXT NOT NULL,
    place         TEXT NOT NULL,
    message       TEXT NOT NULL,
    error_type    TEXT,
    -- a refused step (409/404): kept for the journey, never makes the order broken
    refusal       BOOLEAN NOT NULL DEFAULT false,
    dead_lettered BOOLEAN NOT NULL DEFAULT false,
    received_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX errors_order ON errors (order_id, at) WHERE order_id IS NOT NULL;
CREATE INDEX errors_service ON errors (service, at);

-- One row per order: its furthest status and when detection must look at it again.
CREATE TABLE orders (
    order_id      TEXT PRIMARY KEY,
    status        TEXT,
    rank          INTEGER NOT NULL,
    -- when the span that made the move began and ended
    status_began  TIMESTAMPTZ NOT NULL,
    status_at     TIMESTAMPTZ NOT NULL,
    service       TEXT,
    operation     TEXT,
    trace_id      TEXT,
    span_id       TEXT,
    source        TEXT,
    -- status_at + the SLO of its status; NULL once final
    deadline      TIMESTAMPTZ,
    -- when the latest error with no progress after it makes the order broken
    broken_at     TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX orders_deadline ON orders (deadline) WHERE deadline IS NOT NULL;
CREATE INDEX orders_broken ON orders (broken_at) WHERE broken_at IS NOT NULL;
CREATE INDEX orders_settled ON orders (status_at) WHERE deadline IS NULL;

-- The last time an order passed through a place without error: incidents resolve by it.
-- Keys: "step:<STATUS>" (an order moved on from STATUS) and "<service>|<place>".
CREATE TABLE flow (
    place_key TEXT PRIMARY KEY,
    last_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE incidents (
    id              BIGSERIAL PRIMARY KEY,
    state           TEXT NOT NULL,
    service         TEXT NOT NULL,
    place           TEXT NOT NULL,
    flow_key        TEXT NOT NULL,
    started_at      TIMESTAMPTZ NOT NULL,
    opened_at       TIMESTAMPTZ NOT NULL,
    deadline_at     TIMESTAMPTZ NOT NULL,
    last_since      TIMESTAMPTZ NOT NULL,
    resolved_at     TIMESTAMPTZ,
    acknowledged_by TEXT,
    acknowledged_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX incidents_open ON incidents (state, service, place) WHERE resolved_at IS NULL;

-- What detection reported. One open finding per order (or per unattributed dead letter).
CREATE TABLE findings (
    id          BIGSERIAL PRIMARY KEY,
    subject     TEXT NOT NULL,
    order_id    TEXT,
    state       TEXT NOT NULL,
    status      TEXT,
    since       TIMESTAMPTZ NOT NULL,
    deadline    TIMESTAMPTZ NOT NULL,
    service     TEXT NOT NULL,
    place       TEXT NOT NULL,
    trace_id    TEXT,
    evidence    TEXT NOT NULL,
    -- the order's last successful move when found: status, at, service, operation, trace_id
    last_step   JSONB,
    -- a final order or an unattributed message: stays until acknowledged or expired
    settled     BOOLEAN NOT NULL,
    detected_at TIMESTAMPTZ NOT NULL,
    cleared_at  TIMESTAMPTZ,
    incident_id BIGINT NOT NULL REFERENCES incidents (id)
);
CREATE UNIQUE INDEX findings_open ON findings (subject) WHERE cleared_at IS NULL;
CREATE INDEX findings_incident ON findings (incident_id);

-- Health probes of each service's /healthz.
CREATE TABLE health_samples (
    service TEXT NOT NULL,
    at      TIMESTAMPTZ NOT NULL,
    ok      BOOLEAN NOT NULL,
    detail  TEXT,
    PRIMARY KEY (service, at)
);

-- Webhook alerts, kept until delivered so retries survive a restart.
CREATE TABLE webhook_deliveries (
    id           BIGSERIAL PRIMARY KEY,
    url          TEXT NOT NULL,
    body         JSONB NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at TIMESTAMPTZ,
    last_error   TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX webhook_pending ON webhook_deliveries (next_at) WHERE delivered_at IS NULL;
