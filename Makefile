# Everyday commands, like the original's Makefile.
#   make run                 one run with config/devel.yaml
#   make run ENV=qa ARGS='run --dry-run'
#   make test                the whole suite (starts the local stack when needed)
#   make lint                formatting, clippy and the deployment files' linters, as CI runs them
.PHONY: run check test lint fmt image help

ENV ?= devel
ARGS ?= run

help:
	@echo "make run [ENV=devel] [ARGS='run --dry-run'] | check | test | lint | fmt | image"

run:
	ENVIRONMENT=$(ENV) cargo run --locked -- $(ARGS)

check:
	ENVIRONMENT=$(ENV) cargo run --locked -- check

test:
	scripts/test.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	scripts/checks/lint-deploy.sh

fmt:
	cargo fmt --all

image:
	docker image build -t pc-reserve-poller:local .
