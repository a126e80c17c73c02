# Developer commands (kubebuilder-style). Everything runs from the repository root.
SHELL := /bin/bash
.DEFAULT_GOAL := demo

VENV        ?= .venv
PY          := $(VENV)/bin/python
export KUBECONFIG ?= $(CURDIR)/.cluster/kubeconfig
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONPATH := $(CURDIR)/tools
CLUSTER     := $(PY) -m localcluster
IMAGE_VENV  := .venv-image

.PHONY: demo test unit venv cluster cluster-down run install deploy bench crds help \
        real-deps cluster-real cluster-real-down image test-real fmt lint chaos

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,bench]'
	touch $@

# tools/ on the environment's path, so that `python -m bench` and the tests import
# localcluster (the local cluster, the operator harness) without PYTHONPATH.
$(VENV)/.tools-path: $(VENV)/.installed
	$(PY) -c 'import site, sys; open(site.getsitepackages()[0] + "/scheduledbot-tools.pth", "w").write(sys.argv[1] + "\n")' $(CURDIR)/tools
	touch $@

venv: $(VENV)/.installed $(VENV)/.tools-path ## create the virtual environment with the pinned dependencies

# The image's packages alone (the wheel's dependencies at their pins, no test tools),
# which `make bench` runs the operator under, the source on PYTHONPATH: kopf imports
# the synchronous `kubernetes` client too when it is installed (a test tool here, not
# in the image), 37 MB that the image's operator does not carry.
$(IMAGE_VENV)/.installed: pyproject.toml constraints.txt | $(VENV)/.installed
	rm -rf $(IMAGE_VENV)
	python3 -m venv --without-pip $(IMAGE_VENV)
	$(PY) -m pip --python $(IMAGE_VENV)/bin/python install --quiet --only-binary=:all: -c constraints.txt \
	  $$($(PY) -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
	touch $@

cluster: venv ## start the local control plane (kubeconfig at .cluster/kubeconfig)
	$(CLUSTER) up

cluster-down: ## stop the local control plane; leaves no process behind
	@if [ -x $(PY) ]; then $(CLUSTER) down; else echo "no virtualenv: nothing to stop"; fi

test: venv ## unit tests, then the end-to-end tests on the local control plane
	$(PY) -m pytest -q -p no:cacheprovider

unit: venv ## only the tests that need no cluster
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

fmt: venv ## format the repository and apply ruff's safe fixes (import order among them)
	$(VENV)/bin/ruff check --fix-only --quiet .
	$(VENV)/bin/ruff format .

lint: venv ## the quality gates: ruff (lint, format), import-linter contracts, mypy strict; no cluster needed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m mypy

demo: cluster ## a sample bot joins a local meeting about a minute from now
	$(PY) -m localcluster.demo

run: venv ## run the operator against the current kubeconfig
	$(VENV)/bin/scheduledbot-operator

crds: venv ## regenerate crds/ and its kustomize copy in manifests/crd/ from the pydantic models
	$(PY) -m scheduledbot.api.crd crds manifests/crd

install: ## apply the CRD to the current kubeconfig's cluster
	kubectl apply --server-side -f crds/

MANIFESTS   ?= manifests/
OPERATOR_NAMESPACE ?= scheduledbot-system
deploy: ## apply all manifests (server-side: the CRD is too large for client-side apply; MANIFESTS=overlay)
	kubectl apply --server-side -k $(MANIFESTS)
	@# The key bot tokens are derived from: made once, never replaced (that would orphan staged bots).
	kubectl -n $(OPERATOR_NAMESPACE) get secret scheduledbot-token-key >/dev/null 2>&1 || \
	  kubectl -n $(OPERATOR_NAMESPACE) create secret generic scheduledbot-token-key \
	    --from-literal=key="$$(head -c 32 /dev/urandom | base64)"

bench: cluster $(IMAGE_VENV)/.installed ## join-precision and scale benchmark (quick mode; FULL=1 for the full run)
	$(PY) -m bench $(if $(FULL),--full,) --operator-python $(IMAGE_VENV)/bin/python

chaos: cluster ## fault-injection suite: every scenario, its table (bounded: --budget; ARGS="--scenarios ... --json F")
	$(PY) -m chaos $(ARGS)

# --- the real node (containerd, runc, CNI bridge, the real kubelet; root, Linux) ---
REALNODE    := $(PY) -m realnode
REAL_DEBS   := containerd runc containernetworking-plugins buildah mmdebstrap iptables nftables \
               util-linux iproute2 gcc libc6-dev

real-deps: ## install the Debian packages of the real node and `make image` (apt; once)
	@missing=$$(for p in $(REAL_DEBS); do \
	  dpkg-query -W -f='$${db:Status-Abbrev}' $$p 2>/dev/null | grep -q '^ii' || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $$missing >/dev/null; fi

cluster-real: venv ## the control plane with one real node (KUBECONFIG=.cluster-real/kubeconfig)
	$(REALNODE) up

cluster-real-down: ## stop the real node and its control plane; the host is left as found
	@if [ -x $(PY) ]; then $(REALNODE) down; else echo "no virtualenv: nothing to stop"; fi

image: venv ## build the image from the Dockerfile (buildah) and import it into the real node
	$(REALNODE) image

test-real: cluster-real image ## end-to-end tests on the real node: the image, `make deploy`, real bot containers
	KUBECONFIG=$(CURDIR)/.cluster-real/kubeconfig $(PY) -m pytest -q -s -p no:cacheprovider --real-node tests/real
