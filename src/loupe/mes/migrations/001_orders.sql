-- Manufacturing's orders: pricing, then the operators' work.
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    partner_id TEXT,
    partner_reference TEXT,
    model_sha256 TEXT,
    model_url TEXT,
    price NUMERIC(12, 2),
    currency TEXT,
    volume_mm3 DOUBLE PRECISION,
    operator TEXT,
    failure_reason TEXT,
    last_step_context TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX orders_status ON orders (status);
