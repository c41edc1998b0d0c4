# regserve: every target creates what it needs (virtual environment, stubs, tools).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BUF := node_modules/.bin/buf
PROTOS := $(wildcard proto/regserve/v1/*.proto)
# google/api/*.proto staged from the installed googleapis-common-protos (never committed).
GOOGLEAPIS := build/googleapis/google/api/annotations.proto

HOST ?= 127.0.0.1
PORT ?= 50051
MODEL_DIR ?= var/models
GATEWAY_PORT ?= 8080
METRICS_PORT ?= 9090

.PHONY: serve test lint typecheck generate check-generated bench soak clean chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The Open Inference Protocol suite's clients (tritonclient needs protobuf < 7, regserve >= 7): an
# environment of their own; its tests start `regserve serve` from $(VENV) (tests/oip/server.py).
OIP_VENV := .venv-oip
OIP_STAMP := $(OIP_VENV)/.installed
$(OIP_STAMP): tests/oip/requirements.txt
	$(PYTHON) -m venv $(OIP_VENV)
	$(OIP_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OIP_VENV)/bin/python -m pip install --quiet -r tests/oip/requirements.txt
	touch $(OIP_STAMP)

# promtool checks the /metrics page in the tests; Debian ships it in the prometheus package.
PROMTOOL := $(or $(shell command -v promtool),/usr/bin/promtool)
$(PROMTOOL):
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	$(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus

BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	touch $(BENCH_STAMP)

$(GOOGLEAPIS): $(STAMP)
	$(PY) scripts/generate_stubs.py --stage-googleapis

$(BUF): package.json
	npm install --no-audit --no-fund --silent
	touch $(BUF)

## serve: gRPC on 127.0.0.1:50051, REST gateway on :8080, metrics on :9090, models in var/models.
serve: $(STAMP)
	$(VENV)/bin/regserve serve --host $(HOST) --port $(PORT) --model-dir $(MODEL_DIR) \
		--gateway-port $(GATEWAY_PORT) --metrics-port $(METRICS_PORT)

CHROMIUM := /usr/bin/chromium
CHROMEDRIVER := /usr/bin/chromedriver

## chromium: Debian's chromium and chromium-driver for the tests that drive a real browser; installed when absent (as root).
chromium:
	@if [ -x $(CHROMIUM) ] && [ -x $(CHROMEDRIVER) ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else \
		echo "make chromium: $(CHROMIUM) or $(CHROMEDRIVER) is missing and this is not root;" \
			"install Debian's packages first: sudo apt-get install -y chromium chromium-driver" >&2; \
		exit 1; \
	fi

# tritonclient and the KServe SDK each register the protocol's messages (package inference) in
# protobuf's default pool, so their tests run in two processes.
OIP_PYTEST = REGSERVE_PYTHON=$(abspath $(PY)) $(OIP_VENV)/bin/python -m pytest --confcutdir=tests/oip -p no:cacheprovider

## test: run the test suite against real servers on loopback, then tests/oip with tritonclient in .venv-oip.
test: $(STAMP) $(OIP_STAMP) $(PROMTOOL) chromium
	$(PY) -m pytest
	$(OIP_PYTEST) tests/oip --ignore=tests/oip/test_http_kserve.py
	$(OIP_PYTEST) tests/oip/test_http_kserve.py

## lint: buf lint on the contract, ruff on the Python code, mypy on server/ and client/, deploy/ offline
## (deploy/kserve against the KServe SDK's models, which live in .venv-oip).
lint: $(STAMP) $(OIP_STAMP) $(BUF) $(GOOGLEAPIS) typecheck
	$(BUF) lint
	$(VENV)/bin/ruff check server client tests bench scripts
	mkdir -p build/kubernetes
	$(VENV)/bin/kubectl kustomize deploy/kubernetes > build/kubernetes/regserve.yaml
	$(VENV)/bin/kubernetes-validate --strict --quiet $(KUBERNETES_VERSIONS:%=-k %) build/kubernetes/regserve.yaml
	$(PY) -m pytest -q tests/deploy

# The Kubernetes releases the manifests are validated against (schemas shipped in kubernetes-validate),
# the same as tests/deploy/test_kubernetes.py's.
KUBERNETES_VERSIONS := 1.31.0 1.37.0

# mypy reads the packages under their installed names (regserve.server, regserve.client,
# regserve.v1 and the other generated packages with their .pyi stubs): build/typecheck/regserve links the folders
# that setuptools maps onto those names.
TYPECHECK := build/typecheck/regserve
typecheck: $(STAMP)
	mkdir -p $(TYPECHECK)
	ln -sfn ../../../server $(TYPECHECK)/server
	ln -sfn ../../../client $(TYPECHECK)/client
	ln -sfn ../../../generated/regserve/v1 $(TYPECHECK)/v1
	ln -sfn ../../../generated/inference $(TYPECHECK)/inference
	mkdir -p $(TYPECHECK)/reflection
	ln -sfn ../../../../generated/grpc/reflection/v1 $(TYPECHECK)/reflection/v1
	cd build/typecheck && MYPYPATH=. ../../$(VENV)/bin/mypy --config-file ../../pyproject.toml \
		-p regserve.server -p regserve.client

## generate: compile the contract into generated/ (stubs and .pyi files).
generate: $(STAMP) $(GOOGLEAPIS)
	$(PY) scripts/generate_stubs.py generated

## check-generated: fail when the committed stubs differ from a fresh generation.
check-generated: $(STAMP) $(GOOGLEAPIS)
	$(PY) scripts/generate_stubs.py --check generated

## bench: run the benchmark suite (table, bench/results/latest.json and latest.png), then the training table.
bench: $(BENCH_STAMP)
	$(PY) -m bench
	$(PY) -m bench.training

## soak: every known attack at once against one server for a bounded time (not part of make test).
soak: $(BENCH_STAMP)
	$(PY) -m bench.soak

clean:
	rm -rf $(VENV) $(OIP_VENV) node_modules build *.egg-info
