"""The order-flow monitor: journeys put back together from spans, stuck and broken orders,
incidents, MTTR and uptime."""
