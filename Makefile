# loupe's entry points. `make` alone lists the targets.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

UV_VERSION := 0.13.9
say = @printf '\033[1m==> %s\033[0m\n' "$(1)"

.PHONY: help setup ensure-uv run test bench drills lint clean

help: ## Show this help
	@echo "loupe: trace an order pipeline (shop, crm, mes over RabbitMQ) into Jaeger"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-7s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## Install and start RabbitMQ + PostgreSQL, sync Python deps, set up each process's accounts, build Jaeger, Dex, oauth2-proxy, fetch Jaeger UI
	$(call say,infrastructure: RabbitMQ and PostgreSQL)
	@scripts/setup-infra.sh
	@$(MAKE) ensure-uv
	$(call say,Python dependencies: uv sync --frozen)
	@uv sync --frozen
	$(call say,accounts: loupe provision --delete-guest)
	@uv run loupe provision --delete-guest
	$(call say,pinned tools: scripts/build-tools.sh)
	@scripts/build-tools.sh

# Not in the help (no ##): setup's way of making sure the uv command exists.
ensure-uv:
	@if ! command -v uv >/dev/null 2>&1; then \
	  printf '\033[1m==> %s\033[0m\n' "installing uv $(UV_VERSION) with pip"; \
	  python3 -m pip install --quiet "uv==$(UV_VERSION)"; \
	  command -v uv >/dev/null 2>&1 || { echo "error: uv was installed but is not on PATH" >&2; exit 1; }; \
	fi

run: setup ## Start everything (Jaeger, Dex, sign-in gateway, services, actors); Ctrl-C stops it
	$(call say,loupe up)
	@uv run loupe up

test: setup ## Lint, then unit, integration and end-to-end tests in one pytest run
	$(call say,ruff check)
	@uv run ruff check .
	$(call say,pytest)
	@uv run pytest

bench: setup ## Benchmarks into docs/benchmarks.md: tracing cost and profile, monitor, console (ONLY=pipeline|profile|monitor|console)
	$(call say,benchmarks$(if $(ONLY),: $(ONLY)))
	@uv run python -m loupe.bench $(if $(ONLY),--only $(ONLY))

drills: setup ## Fault drills on a running stack into docs/reliability.md (ONLY=<text> picks drills); stops RabbitMQ and PostgreSQL for a while
	$(call say,fault drills$(if $(ONLY),: $(ONLY)))
	@uv run python -m loupe.drills $(if $(ONLY),--only "$(ONLY)")

lint: ## ruff check and format check (no setup needed beyond uv)
	$(call say,ruff check)
	@uv run ruff check .
	$(call say,ruff format --check)
	@uv run ruff format --check .

clean: ## Remove .data (traces, logs, objects) and .cache (built tools)
	$(call say,removing .data and .cache)
	@rm -rf .data .cache
