# The two set-up commands of the README:
#   make run    main job: train the IEMOCAP preset on a synthetic IEMOCAP-shaped set (CPU ok)
#   make test   the test suite
VENV ?= .venv
PY := "$(VENV)/bin/python"
export VENV

.PHONY: setup run test test-triton bench cmake-build cpp-test cpp-example clean

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

# The same operator library built with CMake for C++ users (no Python needed to use it), with
# the C++ API's test; cpp-example installs it and builds examples/cpp against the installed package.
TORCH_CMAKE = $$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')
cmake-build: setup
	cmake -S . -B build/cmake -DCMAKE_PREFIX_PATH="$(TORCH_CMAKE)" -DGRAPHSMILE_BUILD_TESTS=ON
	cmake --build build/cmake -j2

cpp-test: cmake-build
	ctest --test-dir build/cmake --output-on-failure

cpp-example: cmake-build
	cmake --install build/cmake --prefix build/cmake-install
	cmake -S examples/cpp -B build/cpp-example -DCMAKE_PREFIX_PATH="$(TORCH_CMAKE);$(CURDIR)/build/cmake-install"
	cmake --build build/cpp-example -j2
	build/cpp-example/propagate

clean:
	rm -rf build dist *.egg-info graphsmile/_C*.so
