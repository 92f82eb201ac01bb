# The two commands of the README: `make demo` and `make test`. Each creates or reuses .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean lock

# Every dependency at the version constraints.txt pins (the one the tests passed with).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[local,dev]'
	touch $(STAMP)

# Refresh constraints.txt: the newest versions pyproject.toml allows, resolved by pip-tools (in a
# venv of its own, so it is no dependency of scaler). Run `make test` on the result, then commit it.
LOCK_VENV := .venv-lock
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || \
	  { $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/python -m pip install -q pip-tools; }
	CUSTOM_COMPILE_COMMAND='make lock' $(LOCK_VENV)/bin/pip-compile -q --upgrade --strip-extras \
	  --extra local --extra dev --no-emit-index-url --no-emit-find-links \
	  --output-file constraints.txt pyproject.toml

# What real local droplets need on this machine (namespaces and veths: iproute2, util-linux;
# their base image: mmdebstrap; their package mirror: apt-cacher-ng; SSH into them: openssh-client;
# their cloud firewalls: nftables; the load balancers in front of them: haproxy).
DROPLET_PACKAGES := iproute2 util-linux mmdebstrap apt-cacher-ng openssh-client nftables haproxy

# As root on Debian, install what real droplets need first (once); elsewhere the demo says in
# one line what is missing.
demo: $(STAMP)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  ! dpkg -s $(DROPLET_PACKAGES) >/dev/null 2>&1; then \
	  echo "installing what real droplets need: $(DROPLET_PACKAGES)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends $(DROPLET_PACKAGES) >/dev/null; fi
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m scaler.demo

lint: $(STAMP)
	$(BIN)/ruff check scaler tests bench inventory/scaler-inventory collection
	$(BIN)/ruff format --check scaler tests bench inventory/scaler-inventory collection

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n 2 --dist loadgroup -q

test: lint typecheck unit

# Every benchmark in turn (about 15 minutes); each prints its own figures.
bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/inventory.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/local_cloud.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/bake.py --runs 3
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/setgid.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/rollout.py

clean:
	rm -rf $(VENV) $(LOCK_VENV) .mypy_cache .pytest_cache .ruff_cache .scaler
