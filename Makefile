# qroute: `make demo` runs the gateway on simulated backends; `make test` runs the test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo tools test test-repeat lint bench bench-redis bench-router bench-retrieval bench-rag bench-capacity bench-fuzz bench-soak train-router test-vllm test-flag test-clients clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/qroute index build --input examples/kb/docs examples/kb/records.jsonl \
	  --dictionary examples/kb/dictionary.txt --index .qroute/kb-index --quiet
	$(BIN)/qroute demo --config deploy/qroute.demo.yaml $(if $(filter 1 true yes,$(DEMO_EXIT)),--exit)

# System tools the tests need (prometheus, promtool), from Debian when missing.
tools:
	bash tests/tools.sh

# Lint, type-check, then the suite in a random order (module buckets). The seed is printed first;
# replay a failing order with `make test SEED=N`. tests/clients need the clients extra: make test-clients.
test: $(STAMP) tools
	$(BIN)/ruff check .
	$(BIN)/mypy
	@seed=$${SEED:-$$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')}; echo "pytest order: --random-order-seed=$$seed (replay: make test SEED=$$seed)"; \
	  $(BIN)/python -m pytest -p random_order --random-order-seed=$$seed --ignore=tests/clients

# The suite N times over (default 20), each run in a new random order (its seed printed first): finds
# order- and timing-dependent tests. Stops at the first failing run.
test-repeat: $(STAMP) tools
	for i in $$(seq $(or $(N),20)); do seed=$$(od -An -N2 -tu2 /dev/urandom | tr -d ' '); echo "run $$i: --random-order-seed=$$seed"; \
	  $(BIN)/python -m pytest -p random_order --random-order-seed=$$seed --ignore=tests/clients -x || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/overhead.py

# One request's Redis work (admission script + cache lookup) by client: redis-py's pooled client against
# the gateway's multiplexed connection (docs/operations.md#redis-on-the-request-path).
bench-redis: $(STAMP) tools
	$(BIN)/python benchmarks/redis_calls.py

bench-router: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/router_eval.py

bench-retrieval: $(STAMP)
	$(BIN)/python benchmarks/retrieval_eval.py

bench-rag: $(STAMP)
	$(BIN)/python benchmarks/rag_eval.py

# Capacity: TTFT and tokens/s against concurrency, the knee, the suggested max_concurrent (docs/capacity.md).
# Without ARGS: against `qroute sim` with the sample capacity model (benchmarks/results/capacity.*); for a real
# endpoint: make bench-capacity ARGS="--base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen3-8B --max-ttft-p95 0.5"
bench-capacity: $(STAMP)
	$(BIN)/python benchmarks/capacity.py $(ARGS)

# Rebuild the bundled router model from the shared labelled data (all six files; the recipe is
# router/train.py's defaults, chosen by leaving one file out: make bench-router).
ROUTER_DATA := mmlu_gpt4_vs_mixtral.jsonl routerarena_gemini_vs_haiku.jsonl qwen25_7b_vs_72b_math_l5.jsonl \
  qwen25_7b_vs_72b_crux.jsonl qwen15_7b_vs_72b_mmlupro.jsonl gaokao_zh_gpt35_vs_gpt4.jsonl

# Schema fuzzing (docs/reliability.md): schemathesis from /openapi.json against `qroute serve` on the simulator,
# EXAMPLES valid and invalid requests per operation; benchmarks/results/fuzz.*; fails on any 5xx or non-OpenAI error.
bench-fuzz: $(STAMP)
	$(BIN)/python benchmarks/fuzz.py --examples $(or $(EXAMPLES),300)

# Soak (docs/reliability.md): MINUTES (default 10) at 100 concurrent through two replicas with faults injected;
# benchmarks/results/soak.*; fails on any unexpected error or RSS growth of 10 % or more.
bench-soak: $(STAMP) tools
	$(BIN)/python benchmarks/soak.py --minutes $(or $(MINUTES),10) $(ARGS)
train-router: $(STAMP)
	$(BIN)/qroute route train --recipe transfer --out router/artifacts/complexity.json.gz \
	  --data $(addprefix ../shared/data/router/,$(ROUTER_DATA))

# The frameworks that call qroute as an OpenAI endpoint (langchain-openai, pydantic-ai): the
# `clients` extra, then tests/clients (CI=true makes a missing library a failure, not a skip).
test-clients: $(STAMP)
	$(BIN)/pip install -q -e '.[test,clients]'
	$(BIN)/python -m pytest tests/clients -q -p no:cacheprovider

test-vllm:
	bash tests/vllm/run.sh

test-flag:
	bash tests/flag/run.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
