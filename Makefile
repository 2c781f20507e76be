# Two entry points for a fresh clone: `make run` (the main job) and `make test`.
# Both create .venv on first use and install the project with its test dependencies.

PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: install run test bench network-bench sweeps ablation stability report clean proto image

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (Python 3.11 is required; set PYTHON=...)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## The main job: 13 peer daemons on loopback, 3 of them AvgZero Byzantines, CartPole.
run: install
	$(BIN)/decbyzpg cluster $(ARGS)

## The test suite: about 5 min, plus about 11 min for the docker and netns tests (root; they skip loudly otherwise).
test: install
	$(BIN)/python -m pytest -q $(ARGS)

## The container image decbyzpg:latest, offline: a base image debootstrapped from Debian
## packages, a wheelhouse made here with pip, both cached in /var/cache/decbyzpg
## (docs/DEPLOY.md). Needs root (debootstrap) and a Docker engine (.ci/docker-engine.sh).
image: install
	docker/build-image.sh

## Issue #14's reliability grid: 20 seeds of single-agent PAGE-PG and DecByzPG K = 13 under no
## attack and five attacks, 3,000 trajectories (140 runs; a K = 13 run took 180-210 s here while
## sharing the cores). Its records go to docs/data/sweep-stability, in git, and a rerun resumes
## from them (docs/data/README.md). The former default: make stability ARGS="--set aggregation.every_iteration=false
## --set estimator.drift_clip=0 --set estimator.max_small_steps=0 --out DIR".
stability: install
	$(BIN)/decbyzpg sweep --suite stability --seeds 0-19 --out docs/data/sweep-stability $(ARGS)

## Speed benchmarks (prints figures; docs/RESULTS.md tabulates them).
bench: install
	$(BIN)/decbyzpg bench $(ARGS)

## The long reproductions behind docs/RESULTS.md (about three hours on 2 cores; each
## step reuses the runs it finds finished, so an interrupted `make sweeps` resumes).
sweeps: install
	$(BIN)/decbyzpg sweep --suite speedup --seeds 0-4 --trajectories 5000
	$(BIN)/decbyzpg sweep --suite attacks --seeds 0-4 --trajectories 5000
	$(BIN)/decbyzpg sweep --suite lunar --seeds 0-2 --trajectories 8000
	$(BIN)/decbyzpg sweep --suite lunar-attacks --seeds 0-1 --out docs/data/sweep-lunar-attacks   # the paper's LunarLander figure, K = 13: hours
	$(MAKE) ablation
	$(BIN)/decbyzpg sweep --suite bucketing --seeds 0-7 --trajectories 2000
	$(BIN)/decbyzpg matrix --seeds 0-2 --trajectories 2000 --misbehaviour all
	$(BIN)/decbyzpg trace --attack avg_zero --seed 2 --trajectories 2000 --allow-beyond-tolerance \
		--out results/trace-avg_zero-s2.csv
	$(BIN)/decbyzpg cluster --out results/cluster-main
	$(MAKE) network-bench

## The network's cost next to the learning's: in process vs K loopback peers, K = 13, 25, 49.
network-bench: install
	$(BIN)/decbyzpg bench --network --peers 13 --byzantine 3 --trajectories 1500 --out results/network-bench-K13
	$(BIN)/decbyzpg bench --network --peers 25 --byzantine 6 --trajectories 300 --out results/network-bench-K25
	$(BIN)/decbyzpg bench --network --peers 49 --byzantine 12 --trajectories 200 --out results/network-bench-K49

## The estimator ablation behind docs/TUNING.md: DecByzPG, K = 13, f = 3 AvgZero, seeds 0-2,
## with the tuned estimator, the paper's, and each of the tuned one's two ingredients alone.
ABLATION = $(BIN)/decbyzpg sweep --algorithms decbyzpg --peers 13 --byzantine 3 --attacks avg_zero --seeds 0-2 \
	--trajectories 5000
ablation: install
	$(ABLATION) --preset tuned --out results/ablation-tuned \
		--title "Ablation: tuned estimator (baseline, per-decision weights)"
	$(ABLATION) --preset paper --out results/ablation-paper \
		--title "Ablation: paper estimator (no baseline, full-trajectory weights)"
	$(ABLATION) --preset paper --set estimator.baseline=true --out results/ablation-baseline \
		--title "Ablation: baseline only (full-trajectory weights)"
	$(ABLATION) --preset paper --set estimator.importance=per_decision --out results/ablation-per-decision \
		--title "Ablation: per-decision weights only (no baseline)"

report: install
	$(BIN)/decbyzpg report results/sweep-speedup results/sweep-attacks results/sweep-lunar docs/data/sweep-lunar-attacks results/ablation-tuned \
		results/ablation-paper results/ablation-baseline results/ablation-per-decision \
		results/sweep-bucketing docs/data/sweep-stability --bench results/bench.json --cluster results/cluster-main --matrix results/matrix \
		--network-bench results/network-bench-K13 --network-bench results/network-bench-K25 \
		--network-bench results/network-bench-K49

clean:
	rm -rf $(VENV) results .pytest_cache .hypothesis

## Regenerate the protobuf/gRPC modules after editing proto/decbyzpg/v1/peer.proto.
proto: install
	proto/generate.sh
