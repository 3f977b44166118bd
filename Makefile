# Baton: `make run` sets up everything it needs and starts the stack; `make test` the same
# and runs the tests. Both bootstrap a .venv, the packages and a redis-server binary.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# import-linter gets a virtualenv of its own: it brings `rich`, and with rich beside click,
# `import httpx` loads httpx's command-line module too, 30-40 ms more at every start of a
# program that talks to the venue (a restarted worker missed one more tick for it).
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
# Every package is pinned with its hashes: requirements.lock (the runtime, the dev extra, and
# the pip and setuptools that install Baton itself) and requirements-tools.lock (import-linter).
# Both venvs install only from them, with --require-hashes and --no-deps, so a file on the
# registry that changed, or a package that was not locked, fails the install instead of running.
# pyproject.toml keeps the ranges; `make lock` resolves within them, keeping the pins that still
# fit (UPGRADE=1 takes the newest). The locks are resolved for CPython 3.11 on x86_64 Linux
# (glibc, manylinux_2_28), which is what CI runs; elsewhere run `make lock` first.
LOCK := requirements.lock
TOOLS_LOCK := requirements-tools.lock
LOCKER := .venv-lock
UV_COMPILE = $(LOCKER)/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --custom-compile-command 'make lock' $${UPGRADE:+--upgrade}

# What a user passes (`make deploy REF=...`, `make halt REASON=...`) reaches the programs
# through the environment, never through a command line the shell parses: each is taken
# unexpanded (`$(value)`: make does not run a `$(...)` in it), exported, and read in the recipes
# as "$$NAME" in double quotes, so no character of it is interpreted, by make or by the shell.
USER_VARS := REF REASON HALTS QUICK SLOTS RATE CYCLES DURATION SEED UPGRADE JOBS NAME NET SHADOW PROMOTE
$(foreach v,$(USER_VARS),$(eval override $(v) := $$(value $(v))))
export $(USER_VARS)

.PHONY: run stop status cluster cluster-stop cluster-deploy cluster-rollback deploy rollback reload halt pause resume bench bench-deploy bench-halt bench-feed bench-scale bench-burst bench-failover bench-ha bench-reload bench-redis bench-venue bench-reads bench-backtest bench-replay bench-parity chaos chaos-cluster test test-fast test-e2e test-browser lint lint-commits lock bootstrap redis-server chromium clean

bootstrap: $(STAMP) redis-server

# Baton itself goes in editable, without build isolation (which would fetch an unpinned
# setuptools); `pip check` then fails on a lock that lacks a dependency pyproject.toml added.
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	@touch $(STAMP)

$(TOOLS_STAMP): $(TOOLS_LOCK)
	@test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q --require-hashes --no-deps -r $(TOOLS_LOCK)
	$(TOOLS)/bin/python -m pip check
	@touch $@

# Re-resolve both locks (uv, itself pinned, in a venv of its own), then commit them.
lock:
	@test -x $(LOCKER)/bin/python || $(PYTHON) -m venv $(LOCKER)
	$(LOCKER)/bin/python -m pip install -q 'uv==0.13.8'
	printf 'setuptools>=68\npip\n' | $(UV_COMPILE) --extra dev pyproject.toml - -o $(LOCK)
	echo 'import-linter>=2.17,<3' | $(UV_COMPILE) - -o $(TOOLS_LOCK)

# The embedded Redis needs the redis-server binary: install it with apt when we may,
# else stop and name the package. Not needed when BATON_REDIS_URL points elsewhere.
redis-server:
	@if [ -z "$$BATON_REDIS_URL" ] && ! command -v redis-server >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "redis-server is missing: install the package 'redis-server' (sudo apt-get install redis-server)"; \
	    exit 1; \
	  fi; \
	fi

run: bootstrap
	$(VENV)/bin/baton run

stop: $(STAMP)
	$(VENV)/bin/baton stop

status: $(STAMP)
	@$(VENV)/bin/baton status

# Three hosts on this machine (network namespaces, root needed; docs/ha.md): Redis with a
# Sentinel on each, the programs spread over them, the sim in a venue namespace. Returns once a
# worker trades. BATON_CLUSTER_NAME (baton) and BATON_CLUSTER_NET (10.77.0.0/24) choose the
# namespaces' names and addresses; every BATON_* setting reaches the hosts' programs.
cluster: bootstrap
	$(VENV)/bin/baton cluster start

# Stops every host and removes the namespaces, links and bridge; nothing is left (idempotent).
cluster-stop: $(STAMP)
	$(VENV)/bin/baton cluster stop

# Blue/green across the cluster's hosts (docs/deploys.md): the working tree (or REF=<git ref>)
# to the standby colour's host, the handover at a tick boundary, the old colour restarted on the
# new release as the warm standby on its own host. `make deploy` stays the single-host deploy.
cluster-deploy: $(STAMP)
	$(VENV)/bin/baton cluster deploy $${REF:+"$$REF"}

cluster-rollback: $(STAMP)
	$(VENV)/bin/baton cluster rollback

# Blue/green: stage the working tree (or REF=<git ref>) as a release for the idle colour,
# wait until it is ready, hand over at the next tick boundary, stop the old worker.
# SHADOW=N: first (or only) run it as a shadow for N ticks and print the decisions that differ;
# DECISIONS=D: and until it compared D decisions; PROMOTE=1 then deploys it, refused when it
# compared none or erred where live did not (FORCE=1 anyway; docs/deploys.md, "Shadow deploys").
deploy: $(STAMP)
	$(VENV)/bin/baton deploy $${REF:+--ref="$$REF"} $${SHADOW:+--shadow="$$SHADOW"} \
		$${DECISIONS:+--shadow-decisions="$$DECISIONS"} $${PROMOTE:+--promote} $${FORCE:+--force}

rollback: $(STAMP)
	$(VENV)/bin/baton rollback

# Strategy-only change: hot-reload worker/strategies/ into the running worker, in place.
reload: $(STAMP)
	$(VENV)/bin/baton reload

# Control, straight over Redis (works with the api program down): REASON="..." is optional.
halt: $(STAMP)
	$(VENV)/bin/baton halt $${REASON:+--reason="$$REASON"}

pause: $(STAMP)
	$(VENV)/bin/baton pause $${REASON:+--reason="$$REASON"}

resume: $(STAMP)
	$(VENV)/bin/baton resume

bench-deploy: bootstrap
	$(PY) -m bench.deploy_gap

# Feed ingest: kline messages/s into Redis and frame-to-Redis delay at rising rates, feed on one core.
bench-feed: bootstrap
	$(PY) -m bench.feed_ingest

# Halt latency: HALTS= halts over HTTP on a real stack; ack and round-trip percentiles, orders after acks.
bench-halt: bootstrap
	$(PY) -m bench.halt_latency $${HALTS:+--halts="$$HALTS"}

# Every benchmark in sequence, then a summary table; QUICK=1 for a smoke run at tiny
# sizes (a few minutes; results in a temp dir, so the published ones in bench/results/ stay).
bench: bootstrap
	$(PY) -m bench.all $${QUICK:+--quick}

# Tick cost vs scale: 16-4,096 slots on one worker against a real redis-server (SLOTS=16,1024;
# RATE=0.2 spreads the entries over the entry zone: results in bench/results/tick_scale_spread.json).
bench-scale: bootstrap
	$(PY) -m bench.tick_scale $${SLOTS:+--slots="$$SLOTS"} $${RATE:+--entry-rate="$$RATE"}

# Entry bursts: one entry tick of 256-1,024 slots in zone, cycle after cycle on a virtual clock;
# wall time beside the worker's CPU and Redis's (results in bench/results/entry_burst.json).
bench-parity: bootstrap
	$(PY) -m bench.parity $${DURATION:+--duration-s="$$DURATION"}

bench-burst: bootstrap
	$(PY) -m bench.entry_burst $${CYCLES:+--cycles="$$CYCLES"}

# Crash failover: SIGKILLs of the active worker against blue/green deploys on a real stack.
bench-failover: bootstrap
	$(PY) -m bench.failover

# HA failover table (issue #24): host kills, worker kills, Redis primary kills and link cuts on a
# three-host cluster (network namespaces; needs root) beside today's single-host failover, at 5 s
# ticks. RUNS= per fault (10); QUICK=1 for 2 each with results in a temp dir; CLUSTER_NAME= and
# CLUSTER_NET= pick the namespaces and subnet (bbn, 10.78.3.0/24). Results: bench/results/ha.json.
bench-ha: bootstrap
	$(PY) -m bench.ha $${RUNS:+--runs="$$RUNS"} $${QUICK:+--quick} \
		$${CLUSTER_NAME:+--name="$$CLUSTER_NAME"} $${CLUSTER_NET:+--net="$$CLUSTER_NET"}

# Hot reload: a strategy edit and POST /reload against a blue/green deploy on a real stack.
bench-reload: bootstrap
	$(PY) -m bench.hot_reload

# Redis cost: commands and round trips per tick, memory per slot and per day of candle windows.
bench-redis: bootstrap
	$(PY) -m bench.redis_cost

# The real venue client's cost per order (EIP-712 signing, posting to the sim over HTTP), with
# the C signer against the pure-Python one (results in bench/results/venue_sign.json).
bench-venue: bootstrap
	$(PY) -m bench.venue_sign

# Bounded reads: the tick at 1,024 slots with 7 days of history, alone and with the api's
# readers beside it (status.json writer, dashboard, 50 concurrent /metrics scrapes), and the
# old readers beside the new on a day of history (results in bench/results/reads.json).
bench-reads: bootstrap
	$(PY) -m bench.reads

# Backtest speed (issue #26): a day of 16 slots at 5 s ticks on one core, from a seeded synthetic
# day of 1 s candles in a history store of its own; asleep ticks skipped against every tick,
# 1 against 16 slots, snipe against momentum (results in bench/results/backtest.json).
bench-backtest: bootstrap
	$(PY) -m bench.backtest

# Replay speed (issue #26): a day of recorded inputs of 16 slots, stored as the input log stores
# them (Redis stream, var/inputs/ files), replayed with the code that made them; files against
# Redis, snipe against momentum (results in bench/results/replay.json).
bench-replay: bootstrap
	$(PY) -m bench.replay

# Chaos: DURATION= seconds of seeded faults (600) on a real stack, then the invariant check;
# SEED= replays a run (default: random, printed). Results in bench/results/chaos.json; exits
# non-zero when an invariant breaks. docs/reliability.md has the catalogue and the latest run.
chaos: bootstrap
	$(PY) -m tests.chaos.harness --duration-s="$${DURATION:-600}" $${SEED:+--seed="$$SEED"}

# Chaos on the three-host cluster (root: network namespaces): DURATION= seconds (600) of host
# kills, partitions, Redis primary kills and pauses, Sentinel restarts and deploys, one at a
# time, then the single-host invariants plus "no order after the poster's lease deadline".
# Its own cluster NAME= (chaos) and NET= (10.77.8.0/24), removed at the end whatever happens.
# Results in bench/results/chaos-cluster.json; docs/reliability.md has the faults and a run.
chaos-cluster: bootstrap
	$(PY) -m tests.chaos.cluster_harness --duration-s="$${DURATION:-600}" $${SEED:+--seed="$$SEED"} \
	  $${NAME:+--name="$$NAME"} $${NET:+--net="$$NET"}

# Most end-to-end tests wait on real time (windows, entry zones, restarts) far more than they
# use the CPU (a trading stack ~6 % of a core, ~6 s of CPU to start), so they run three at a
# time beside the fast suite: one worker runs the fast files from the start, the other three an
# end-to-end module each, the longest first, taking the next when done; a worker whose kind has
# run out takes the other (tests/scheduling.py; xdist must not reorder). Four stacks at a time
# from the start (-n 5) made a rollback miss a 500 ms tick on a busy machine. The tests
# judged by the wall clock (a missed tick, a restart's length; marked `serial`) then run
# alone, where another stack's work cannot be mistaken for a fault. JOBS=1: one at a time.
test: bootstrap
	$(VENV)/bin/pytest -q -n "$${JOBS:-4}" --dist loadgroup --no-loadscope-reorder -m "not serial" tests
	$(VENV)/bin/pytest -q -m serial tests

test-fast: bootstrap
	$(VENV)/bin/pytest -q tests/fast

test-e2e: bootstrap
	$(VENV)/bin/pytest -q tests/e2e

# The dashboard in a real headless Chromium (tests/browser). `make test` runs them too when a
# Chromium is installed and skips them when not; here a missing browser is a failure.
test-browser: bootstrap chromium
	BATON_REQUIRE_BROWSER=1 $(VENV)/bin/pytest -q tests/browser

# Debian's `chromium` package, for test-browser: installed with apt when we may, else named
# (BATON_CHROMIUM may point at another Chromium or Chrome binary).
chromium:
	@if [ -z "$$BATON_CHROMIUM" ] && ! command -v chromium >/dev/null 2>&1 \
	    && ! command -v chromium-browser >/dev/null 2>&1 && ! command -v google-chrome >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium is missing: install the package 'chromium' (sudo apt-get install chromium)"; \
	    exit 1; \
	  fi; \
	fi

# ruff, mypy over every package, and the import contracts of pyproject.toml (the layers).
lint: $(STAMP) $(TOOLS_STAMP) lint-commits
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	cd $(CURDIR) && $(TOOLS)/bin/lint-imports

# Commit subjects of at most 72 characters (the why goes in the body), checked for every commit
# after the one that set the rule; a clone that lacks that commit (a shallow one) skips it.
# Commits 84d96fb, 19c917d and 9d34a3e reached main with 74- and 73-character subjects; main
# is never rewritten, so they are the subjects let through, by their exact text.
SUBJECTS_SINCE := 2ebef0eb181d4425343d1295ff8a3c6af12a20f7
SUBJECTS_LET_THROUGH := kernel: an untrustworthy journal guard or a refused booking blocks entries
SUBJECTS_LET_THROUGH_2 := docs/reliability.md: a partitioned holder's order landed after its deadline
SUBJECTS_LET_THROUGH_3 := kernel: a strategy's junk numbers are refused, not raised out of the tick
lint-commits:
	@if git cat-file -e $(SUBJECTS_SINCE)^{commit} 2>/dev/null; then \
	  long=$$(git log --format=%s $(SUBJECTS_SINCE)..HEAD | awk 'length > 72' \
	    | grep -vxF -e '$(SUBJECTS_LET_THROUGH)' -e "$(SUBJECTS_LET_THROUGH_2)" \
	    -e "$(SUBJECTS_LET_THROUGH_3)"); \
	  if [ -n "$$long" ]; then echo "commit subjects over 72 characters:"; echo "$$long"; exit 1; fi; \
	fi

clean: stop
	rm -rf var
