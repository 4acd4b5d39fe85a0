-- Every service's delivery bookkeeping, beside its own tables (its migrations/ folder).

-- Idempotent consumption: one row per message applied from each queue (messaging/inbox.py).
-- IF NOT EXISTS: databases made before this file have it from their service's first migration.
CREATE TABLE IF NOT EXISTS processed_messages (
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, message_id)
);

-- Events written with the change they announce, published by the relay (service/outbox.py).
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    order_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body BYTEA NOT NULL,
    -- The deciding step's traceparent/tracestate: the publish span's parent.
    trace_headers TEXT NOT NULL,
    written_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
