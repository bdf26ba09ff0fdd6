# Two commands are the whole set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv when missing and install requirements.txt and the package (a no-op when unchanged).
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.requirements-installed
DEMO    := runs/demo
PYTEST_ARGS ?=

.PHONY: install test demo demo-tasks clean-demo gpu-check gpu-wheels

# requirements.txt is the pinned set; then the package itself, editable (pyproject.toml), so `import snps3_ds`
# works from any folder and the launch scripts need no import-path tricks.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/pytest -q $(PYTEST_ARGS) tests

# Corpus (built on first use) -> zero-shot retrieval of the untrained model -> 2-rank DeepSpeed
# pre-training on the CPU -> retrieval again, printed beside the first. Precision: bf16 where the CPU computes
# it natively (AVX512_BF16/AMX) or on a GPU, else fp32 (launch/pick_ds_config.py says which and why).
DEMO_DS_CONFIGS := ds_configs/zero2.json ds_configs/zero2_fp32.json
# demo-tasks' fine-tunes pick theirs the same way.
DEMO_DS = $$($(PY) launch/pick_ds_config.py $(DEMO_DS_CONFIGS))
# `make demo demo-tasks DEMO_SEED=1`: the same chain with another seed (pre-training and both fine-tunes).
DEMO_SEED ?=
SEED_ARG = $(if $(DEMO_SEED),train.seed=$(DEMO_SEED))
demo: $(STAMP)
	rm -rf $(DEMO)
	$(PY) launch/evaluate.py --config launch/recipes/demo.yaml --out $(DEMO)/eval_before.json
	PATH=$(abspath $(VENV))/bin:$$PATH deepspeed --num_gpus 2 launch/pretrain.py \
		--config launch/recipes/demo.yaml --ds_config $(DEMO_DS) $(SEED_ARG)
	$(PY) launch/evaluate.py --config launch/recipes/demo.yaml --checkpoint $(DEMO)/checkpoints \
		--baseline $(DEMO)/eval_before.json --out $(DEMO)/eval_after.json

# Downstream demo (after `make demo`): zero-shot retrieval / QA / multi-choice from the pre-trained
# checkpoint, then 2-rank DeepSpeed fine-tuning for retrieval and QA, and the figures side by side.
TASKS := data/demo/tasks
FT    := runs/demo_tasks
DS2   := PATH=$(abspath $(VENV))/bin:$$PATH deepspeed --num_gpus 2
demo-tasks: $(STAMP)
	test -f $(DEMO)/checkpoints/latest || $(MAKE) demo
	rm -rf $(FT) runs/demo_ft_retrieval runs/demo_ft_qa
	$(PY) data_prep/make_demo_corpus.py --out data/demo --tasks-only
	$(PY) launch/evaluate.py --config launch/recipes/demo_ft_retrieval.yaml --checkpoint $(DEMO)/checkpoints \
		--annotation $(TASKS)/retrieval_test.json --rerank 10 --out $(FT)/zs_retrieval.json
	$(PY) launch/evaluate.py --config launch/recipes/demo_ft_qa.yaml --checkpoint $(DEMO)/checkpoints \
		--annotation $(TASKS)/qa_test.json --qa-zero-shot --out $(FT)/zs_qa.json
	$(PY) launch/evaluate.py --config launch/recipes/demo_ft_retrieval.yaml --checkpoint $(DEMO)/checkpoints \
		--annotation $(TASKS)/mc_test.json --out $(FT)/zs_mc.json
	$(DS2) launch/finetune.py --config launch/recipes/demo_ft_retrieval.yaml --ds_config $(DEMO_DS) \
		--init $(DEMO)/checkpoints $(SEED_ARG)
	$(DS2) launch/finetune.py --config launch/recipes/demo_ft_qa.yaml --ds_config $(DEMO_DS) \
		--init $(DEMO)/checkpoints $(SEED_ARG)
	$(PY) launch/compare_results.py --same zs_= \
		zero-shot=$(FT)/zs_retrieval.json,$(FT)/zs_mc.json,$(FT)/zs_qa.json \
		fine-tuned=runs/demo_ft_retrieval/eval_final.json,runs/demo_ft_qa/eval_final.json \
		--keys R@1@ R@5@ MdR mc/acc qa/acc

clean-demo:
	rm -rf $(DEMO) data/demo $(FT) runs/demo_ft_retrieval runs/demo_ft_qa

# GPU check (README "GPU check"): no install step, so it runs on the GPU node's own python with the carried
# wheels: make gpu-check GPU_PY=/opt/torch/.venv/bin/python3. Without CUDA it runs its CPU subset.
GPU_PY     ?= $(PY)
GPU_WHEELS ?= gpu_wheels
GPU_SITE   ?= gpu_site
gpu-check:
	PYTHONPATH=$(CURDIR) $(GPU_PY) launch/gpu_wheels.py unpack $(GPU_WHEELS) $(GPU_SITE)
	PYTHONPATH=$(CURDIR):$(CURDIR)/$(GPU_SITE) PATH=$(CURDIR)/$(GPU_SITE)/ninja/data/bin:$$PATH \
		$(GPU_PY) launch/gpu_check.py --out runs/gpu_check

# The node's wheels, fetched here (PyPI): gpu_wheels/base (one transfer) and gpu_wheels/dali/part-NN.
gpu-wheels:
	PYTHONPATH=$(CURDIR) $(PY) launch/gpu_wheels.py download $(GPU_WHEELS)
