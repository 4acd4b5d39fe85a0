-- The shop's view of its customers' orders. Personal data lives here and only here.
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    customer_name TEXT,
    customer_email TEXT,
    customer_phone TEXT,
    shipping_address TEXT,
    model_sha256 TEXT,
    model_filename TEXT,
    model_size INTEGER,
    price NUMERIC(12, 2),
    currency TEXT,
    failure_reason TEXT,
    last_step_context TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX orders_status ON orders (status);
