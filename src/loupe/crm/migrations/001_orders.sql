-- What sellers see and decide on: every order, from the shop and from B2B partners.
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    price NUMERIC(12, 2),
    currency TEXT,
    seller TEXT,
    rejection_reason TEXT,
    failure_reason TEXT,
    tracking_number TEXT,
    last_step_context TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX orders_status ON orders (status);
