# The two commands of the README: `make demo` and `make test`. Each creates or reuses .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[local,dev]'
	touch $(STAMP)

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
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .scaler
