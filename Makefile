# The two set-up commands of the README:
#   make run    main job: train the IEMOCAP preset on a synthetic IEMOCAP-shaped set (CPU ok)
#   make test   the test suite
VENV ?= .venv
PY := "$(VENV)/bin/python"
export VENV

.PHONY: setup run test test-triton bench cmake-build clean

setup:
	@bash scripts/setup_env.sh

run: setup
	$(PY) -m graphsmile train --dataset IEMOCAP --out runs/demo --overwrite

test: setup
	$(PY) -m pytest tests -q -p no:cacheprovider --ignore=tests/test_triton.py
	@if $(PY) -c "import triton" 2>/dev/null; then \
		echo "[test] Triton kernels under the interpreter (TRITON_INTERPRET=1)"; \
		TRITON_INTERPRET=1 $(PY) -m pytest tests/test_triton.py -q -p no:cacheprovider; \
	else echo "[test] triton not installed: Triton interpreter tests not run"; fi

bench: setup
	$(PY) bench/ops.py

# The same operator library built with CMake for C++ users.
cmake-build: setup
	cmake -S . -B build/cmake -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build build/cmake -j2

clean:
	rm -rf build dist *.egg-info graphsmile/_C*.so
