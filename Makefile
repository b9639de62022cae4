# Lapse: `make run` starts the four services locally, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

# The broker's administrator: `make run` creates a user per service with it (setup-broker), and
# each service then connects as its own user (deploy/local/Procfile). Needs the management plugin
# (`rabbitmq-plugins enable rabbitmq_management`).
export LAPSE_AMQP_URL     ?= amqp://guest:guest@127.0.0.1:5672/
export LAPSE_BROKER_MANAGEMENT_URL ?= http://guest:guest@127.0.0.1:15672
export LAPSE_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/lapse
export LAPSE_POLICY_DIR   ?= examples/policies
export LAPSE_TOKEN_FILE   ?= examples/tokens.yaml
# The notifier's webhooks; the example posts only to the local sink (examples/webhook_sink.py).
export LAPSE_NOTIFIER_CONFIG ?= examples/notifier.yaml
# The demo broker user may submit requests for others over AMQP (request.submit commands).
export LAPSE_SUBMIT_PRINCIPALS ?= ["guest"]
# Seals ephemeral credentials (postgres-login) until fetched. A demo key: set your own anywhere else.
export LAPSE_CREDENTIALS_KEY ?= 3q2-7wsPzBkGd5qVhPq5Yw9pJ1mS9y0GkXK8nQ0bZ1A=

.PHONY: install run setup-broker test lint docs pin clean

$(VENV)/.installed: requirements-dev.txt constraints.txt shared/pyproject.toml services/*/pyproject.toml cli/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

## Start request (:8080), policy (:8081), grant (:8082), audit (:8083), the notifier (:8084) and
## its local webhook sink (:8090); Ctrl-C stops all.
## Each service applies its own migrations at start; the audit checkpoint key is made once in .run/.
run: install setup-broker
	$(BIN)/python examples/demo_target.py
	@mkdir -p .run
	@test -f .run/checkpoint.pem || $(BIN)/lapse audit keygen -o .run/checkpoint.pem
	LAPSE_CHECKPOINT_KEY_FILE=$${LAPSE_CHECKPOINT_KEY_FILE:-$(CURDIR)/.run/checkpoint.pem} \
	LAPSE_LOG_JSON=$${LAPSE_LOG_JSON:-false} PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/honcho start -f deploy/local/Procfile -d $(CURDIR)

## A broker user per service (lapse-request, ...) with least privilege; idempotent. Local passwords
## lapse-local-<service>, as in deploy/local/Procfile.
setup-broker: install
	LAPSE_BROKER_PASSWORD_REQUEST=lapse-local-request LAPSE_BROKER_PASSWORD_POLICY=lapse-local-policy \
	LAPSE_BROKER_PASSWORD_GRANT=lapse-local-grant LAPSE_BROKER_PASSWORD_AUDIT=lapse-local-audit \
	LAPSE_BROKER_PASSWORD_NOTIFIER=lapse-local-notifier $(BIN)/python -m lapse_shared.messaging.broker_setup

## The whole suite: unit, integration (real RabbitMQ + PostgreSQL), end-to-end, lint.
test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## Regenerate the committed contract documents (OpenAPI, AsyncAPI, JSON Schemas).
docs: install
	$(BIN)/python scripts/generate_contracts.py docs

pin:
	{ echo '# Pinned versions of every dependency (pip -c constraints.txt). Regenerate with `make pin`.'; \
	  $(BIN)/pip freeze --exclude-editable | grep -v '^-e'; } > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
