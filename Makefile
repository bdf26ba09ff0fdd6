# Two commands are the whole set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv when missing and install requirements.txt (a no-op when it is unchanged).
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.requirements-installed
DEMO    := runs/demo
PYTEST_ARGS ?=

.PHONY: install test demo clean-demo

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/pytest -q $(PYTEST_ARGS) tests

# Corpus (built on first use) -> zero-shot retrieval of the untrained model -> 2-rank DeepSpeed
# pre-training on the CPU -> retrieval again, printed beside the first.
demo: $(STAMP)
	rm -rf $(DEMO)
	$(PY) launch/evaluate.py --config launch/recipes/demo.yaml --out $(DEMO)/eval_before.json
	PATH=$(abspath $(VENV))/bin:$$PATH deepspeed --num_gpus 2 launch/pretrain.py \
		--config launch/recipes/demo.yaml --ds_config ds_configs/zero2.json
	$(PY) launch/evaluate.py --config launch/recipes/demo.yaml --checkpoint $(DEMO)/checkpoints \
		--baseline $(DEMO)/eval_before.json --out $(DEMO)/eval_after.json

clean-demo:
	rm -rf $(DEMO) data/demo
