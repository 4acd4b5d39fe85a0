"""Fault drills (`make drills`): `loupe up` with its actors, and one fault at a time (RabbitMQ
stopped or blocked, PostgreSQL restarted, a process killed or frozen, the whole stack
restarted), each audited against the services' databases. See docs/reliability.md."""
