-- Failed requests that named no order, by place: detection looks for broken places among them
-- every tick.
CREATE INDEX errors_unattributed_requests ON errors (service, place, at)
    WHERE order_id IS NULL AND kind = 'SERVER';
