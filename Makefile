# Everything runs from a project-local virtual environment that `make venv` builds on demand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
ARTIFACTS ?= artifacts
DEMO_ONCE ?=
DEMO_ARGS ?=
# PyPI's Linux torch wheel brings the CUDA libraries with it; where no CPU wheel of
# torch 2.13.0 is at hand (this project's machines have one via pip's find-links), point pip
# at PyTorch's CPU index: make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

PROTO_SRC := $(wildcard protos/recsys/v1/*.proto)

.PHONY: help venv proto demo test lint bench clean loadclient

help:
	@echo "make demo     data -> training -> index -> four services -> recommendations (DEMO_ONCE=1 exits)"
	@echo "make test     unit + integration tests (real servers on loopback)"
	@echo "make proto    regenerate Python stubs, type stubs and protos/recsys.protoset"
	@echo "make lint     ruff"
	@echo "make bench    end-to-end serving latency against the demo's artifacts"
	@echo "make venv     only the environment (.venv); make clean removes it and artifacts/"
	@echo "make loadclient  the compiled gRPC load client the benchmarks use when built"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned, so that the dependencies below resolve against it.
	$(BIN)/pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),) "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

proto: $(VENV)/.installed
	$(PY) -m grpc_tools.protoc -Iprotos \
		--python_out=protos --pyi_out=protos --grpc_python_out=protos \
		--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc --mypy_grpc_out=protos \
		--include_imports --include_source_info --descriptor_set_out=protos/recsys.protoset \
		$(PROTO_SRC)

demo: $(VENV)/.installed
	$(BIN)/recserve demo --artifacts $(ARTIFACTS) $(if $(DEMO_ONCE),--once,) $(DEMO_ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(VENV)/.installed
	$(PY) -m bench.serving_latency --artifacts $(ARTIFACTS)

clean:
	rm -rf $(VENV) $(ARTIFACTS) .pytest_cache

# The compiled load client of bench/loadclient (optional: the benchmarks fall back to a
# Python client without it). Needs Debian's libgrpc++-dev and pkg-config.
loadclient: build/loadclient

build/loadclient: bench/loadclient/loadclient.cc
	@pkg-config --exists grpc++ || { echo "needs libgrpc++-dev and pkg-config (apt-get install libgrpc++-dev pkg-config)"; exit 1; }
	mkdir -p build
	g++ -O2 -std=c++17 -Wall -Wextra $< $$(pkg-config --cflags --libs grpc++) -o $@
