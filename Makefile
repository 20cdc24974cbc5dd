# Set-up and checks. `make test` and `make example` are the two commands README promises.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# A CPU build of torch shipped on disk (these machines have one); elsewhere pip resolves torch normally. Its
# torchvision goes with it (the openclip extra needs one), so pip never swaps torch for another build.
TORCH_CPU_WHEEL := $(firstword $(wildcard /opt/wheels/torch-*+cpu-*.whl))
TORCHVISION_CPU_WHEEL := $(firstword $(wildcard /opt/wheels/torchvision-*+cpu-*.whl))

.PHONY: install test test-fast demo demo-loop demo-unicl example benchmark clean browser rules-table flink spark

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(if $(TORCH_CPU_WHEEL),$(PIP) install -q $(TORCH_CPU_WHEEL) $(TORCHVISION_CPU_WHEEL),)
	$(PIP) install -q -e '.[train,dev,openclip]'
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed browser
	$(PY) -m pytest -q tests

# The same without the tests marked e2e (whole curate/extract/example/demo pipelines, whole training runs).
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not e2e" tests

# Headless Chromium renders report.html in one test (which skips where no browser exists). Install Debian's
# package when we can (root with apt-get, as in CI); never fail the build over it.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: the report.html browser test will be skipped"; }

demo: $(VENV)/.installed
	$(VENV)/bin/aligndata demo --output demo_output --overwrite --compare

# The closed loop too (README: "The closed loop"): two more training runs, about twice `make demo`'s time.
demo-loop: $(VENV)/.installed
	$(VENV)/bin/aligndata demo --output demo_output --overwrite --loop

# UniCL's question (README: "Does image-label data help?"): three runs on each of two seeds, one thread each
# (two torch threads on these shared 2 cores ran 10x slower under load).
demo-unicl: $(VENV)/.installed
	for seed in 0 1; do OMP_NUM_THREADS=1 $(VENV)/bin/aligndata demo --unicl --output demo_unicl/seed$$seed \
	  --overwrite --seed $$seed || exit 1; done

example: $(VENV)/.installed
	$(VENV)/bin/aligndata example --output example_output --overwrite

# Beam's job servers for --runner FlinkRunner / SparkRunner, from Maven Central into .cache/job-servers (git
# ignores it); curate finds them there. FLINK_MINOR must match the cluster's Flink.
FLINK_MINOR ?= 1.19
flink: $(VENV)/.installed
	$(PY) -m aligndata.pipeline.job_servers flink $(FLINK_MINOR)

spark: $(VENV)/.installed
	$(PY) -m aligndata.pipeline.job_servers spark

# README's rule table is made from the rule registry (tests/test_registry.py fails when it is stale).
rules-table: $(VENV)/.installed
	$(VENV)/bin/aligndata rules --write-readme README.md

benchmark: $(VENV)/.installed
	$(PY) benchmarks/bench_text_stage.py
	$(PY) benchmarks/bench_text_stage.py --rows 100000 --vocab-size 100000  # the rare-token rule active (c* = 4)
	$(PY) benchmarks/bench_shuffle_bytes.py --rows 100000 --vocab-size 100000
	$(PY) benchmarks/bench_dry_run_memory.py --rows 1000000 --vocab-size 300000  # rule active (c* = 2)
	$(PY) benchmarks/bench_image_stage.py
	$(PY) benchmarks/bench_language_cost.py --rows 50000  # the text_language rule on against off

clean:
	rm -rf $(VENV) demo_output example_output .pytest_cache
