# argocd-secrets-plugin developer entry points. `make help` lists them.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
TOOLS_BIN := $(CURDIR)/.tools/bin
PYTEST_ARGS ?=

# The pinned tools, exported to pytest only (an explicit environment variable wins).
TOOL_ENV = HELM3_BIN="$${HELM3_BIN:-$(TOOLS_BIN)/helm3}" \
	HELM4_BIN="$${HELM4_BIN:-$(TOOLS_BIN)/helm4}" \
	KUSTOMIZE_BIN="$${KUSTOMIZE_BIN:-$(TOOLS_BIN)/kustomize}" \
	BAO_BIN="$${BAO_BIN:-$(TOOLS_BIN)/bao}" \
	ARGOCD_CMP_SERVER_BIN="$${ARGOCD_CMP_SERVER_BIN:-$(TOOLS_BIN)/argocd-cmp-server}" \
	CMP_CLIENT_BIN="$${CMP_CLIENT_BIN:-$(TOOLS_BIN)/cmp-client}" \
	GOYAML_JSON_BIN="$${GOYAML_JSON_BIN:-$(TOOLS_BIN)/goyaml-json}" \
	REGISTRY_BIN="$${REGISTRY_BIN:-$(TOOLS_BIN)/registry}" \
	KUBE_APISERVER_BIN="$${KUBE_APISERVER_BIN:-$(TOOLS_BIN)/kube-apiserver}" \
	ETCD_BIN="$${ETCD_BIN:-$(TOOLS_BIN)/etcd}"

.PHONY: help venv tools lint test test-unit demo clean

help:
	@echo "make demo       render the example registry app for one cluster with the file backend"
	@echo "make test       venv + tools + lint + all tests (unit and integration)"
	@echo "make test-unit  unit tests only (no external programs)"
	@echo "make lint       ruff check, ruff format --check, mypy --strict plugin"
	@echo "make tools      install the pinned helm3/helm4/kustomize/bao/registry into .tools/bin"
	@echo "make venv       create .venv and install the project with its dev extras"

venv: $(VENV_STAMP)

# Quiet recipes (`@`, progress on stderr): `make demo > out.yaml` must hold only YAML.
$(VENV_STAMP): pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV) >&2
	@$(VPY) -m pip install --quiet --disable-pip-version-check -e '.[dev]' >&2
	@touch $@

tools: venv
	$(VPY) scripts/install-tools

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict plugin

test: venv tools lint
	$(TOOL_ENV) $(VPY) -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(VPY) -m pytest -m "not integration" $(PYTEST_ARGS)

# The demo needs only Helm 3 (about 25 s to fetch on a fresh machine), not the Go-built tools.
demo: venv
	@$(VPY) scripts/install-tools helm3 >&2
	@PATH="$(TOOLS_BIN):$$PATH" AVP_TYPE=file AVP_FILE_PATH=examples/secrets.yaml \
	ARGOCD_APP_NAME=vanilla-dso-registry ARGOCD_APP_NAMESPACE=dso-registry \
	ARGOCD_APP_SOURCE_PATH=examples/apps/registry \
	ARGOCD_ENV_CONTEXT_FILES=/examples/clusters/vanilla.yaml \
	$(VENV)/bin/plugin generate examples/apps/registry

clean:
	rm -rf .tools .pytest_cache .mypy_cache .ruff_cache
