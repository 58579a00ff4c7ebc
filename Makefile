# rackd — build, test, demo.  Run as root on Debian (the tests build network namespaces).
SHELL := /bin/bash
CARGO ?= cargo
# Cargo.lock is tracked; set LOCKED=--locked to refuse any change to it (release builds). Tests
# run without it so that a crate's new dependency never fails CI on the lock file alone.
LOCKED ?=
# System packages needed to build and test; `make deps` installs the missing ones only.
DEB_PACKAGES := build-essential pkg-config libnftnl-dev libmnl-dev nftables iproute2 iperf3 \
                socat busybox-static conntrack procps kmod systemd \
                openssh-server openssh-client nginx-light curl redis-server redis-tools

.PHONY: all deps build lint test test-unit bench demo fmt clean install uninstall deb soak

all: build

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing $$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@command -v cargo >/dev/null || { echo "deps: cargo not found (install the Rust toolchain)"; exit 1; }

build: deps
	$(CARGO) build --workspace --all-targets $(LOCKED)

fmt:
	$(CARGO) fmt --all

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets $(LOCKED) -- -D warnings

# Every test, including the network-namespace ones (root required: they fail, not skip, without it).
test: deps lint build
	@if [ "$$(id -u)" != 0 ]; then echo "make test: the namespace tests need root (or CAP_NET_ADMIN+CAP_SYS_ADMIN)"; exit 1; fi
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace $(LOCKED) --no-fail-fast; \
	else \
	  $(CARGO) test --workspace $(LOCKED) --no-fail-fast; \
	fi

# Client — router — server namespaces, rackd on both, a stream through a 30 s outage and a client
# address change, `rackctl status` before, during and after, digests compared (root, about a
# minute after the build).
demo: deps
	$(CARGO) build $(LOCKED) -p rackd -p rackctl -p netns-tests --bins
	bash scripts/demo.sh

# End-to-end benchmark against native TCP (root; about 5 minutes): table, JSON and SVG in
# target/bench-e2e. Micro-benchmarks: `cargo bench -p tcpseq`.
bench: deps
	$(CARGO) build --release $(LOCKED) -p rackd -p rackctl -p benches
	$${CARGO_TARGET_DIR:-target}/release/e2e --out $${CARGO_TARGET_DIR:-target}/bench-e2e

clean:
	$(CARGO) clean

# Binaries, systemd unit, sysusers entry, man page, completions and (if absent) the default config
# (docs/service.md). PREFIX (default /usr/local), DESTDIR for staging. BINDIR_SRC=DIR installs the
# rackd and rackctl already in DIR instead of building release binaries (cargo may be missing
# under sudo: then the existing release build is used).
install:
	@if [ -z "$(BINDIR_SRC)" ] && command -v $(CARGO) >/dev/null; then \
	  $(CARGO) build --release $(LOCKED) -p rackd -p rackctl; \
	fi
	PREFIX="$(or $(PREFIX),/usr/local)" DESTDIR="$(DESTDIR)" \
	  BINDIR_SRC="$(or $(BINDIR_SRC),$(or $(CARGO_TARGET_DIR),target)/release)" \
	  bash packaging/install.sh install

# Soak run, not in CI (root; an hour by default): 100 connections, an outage every 2 minutes,
# RSS and flow tables sampled (docs/scenarios.md). SOAK_ARGS="--duration-s 600" for a short one.
soak: deps
	bash scripts/soak.sh $(SOAK_ARGS)

# A Debian package in target/deb (OUT=DIR elsewhere) holding what `make install PREFIX=/usr`
# installs; BINDIR_SRC as for install.
deb:
	@if [ -z "$(BINDIR_SRC)" ]; then $(CARGO) build --release $(LOCKED) -p rackd -p rackctl; fi
	@BINDIR_SRC="$(or $(BINDIR_SRC),$(or $(CARGO_TARGET_DIR),target)/release)" \
	  OUT="$(or $(OUT),$(or $(CARGO_TARGET_DIR),target)/deb)" COMPRESS="$(COMPRESS)" \
	  bash packaging/deb.sh

# Removes what install installed; keeps an edited /etc/rackd/rackd.toml and the rackd group.
uninstall:
	PREFIX="$(or $(PREFIX),/usr/local)" DESTDIR="$(DESTDIR)" bash packaging/install.sh uninstall
