# Sourced by the CUDA build scripts (.ci/cuda_build_check.sh, scripts/build_prebuilt.sh): sets and
# exports CUDA_HOME (unless set) and puts its bin/ first on PATH; returns 1 if no toolkit is found.
# torch guesses CUDA_HOME from `which nvcc`; a wrapper in /usr/local/bin would make it /usr/local,
# where libcudart is not, so the toolkit directory itself is preferred.
find_cuda_home() {
  if [ -z "${CUDA_HOME:-}" ]; then
    local cand
    for cand in /usr/local/cuda "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc || echo /nonexistent)")")")"; do
      if [ -x "$cand/bin/nvcc" ] && { [ -e "$cand/lib64/libcudart.so" ] || [ -e "$cand/lib/libcudart.so" ]; }; then
        export CUDA_HOME="$cand"
        break
      fi
    done
  fi
  [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ] || return 1
  export PATH="$CUDA_HOME/bin:$PATH"
}
