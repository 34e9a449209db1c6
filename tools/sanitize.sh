#!/usr/bin/env bash
# Build vecconv with AddressSanitizer + UndefinedBehaviorSanitizer and run the test suite
# against that build. Python itself is not instrumented, so the sanitizer runtimes are
# preloaded. Deselected: the torch tests (torch is not built for ASan) and the RSS-growth
# test (ASan's quarantine keeps freed memory by design, so RSS grows without a leak).
#
#   bash tools/sanitize.sh            # uses /tmp/vecconv-asan as its virtual environment
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-/tmp/vecconv-asan}
python3 -m venv "$venv"
"$venv/bin/pip" install -q numpy scipy scipy-openblas32 meson-python meson ninja cython pytest hypothesis threadpoolctl
"$venv/bin/pip" install -q --no-build-isolation --force-reinstall --no-deps \
    -Csetup-args=-Db_sanitize=address,undefined -Csetup-args=-Db_lundef=false \
    -Csetup-args=-Dbuildtype=debugoptimized .
# Reports go to files: pytest captures file descriptor 2, and an aborting sanitizer's
# report written there is lost with the process.
logs=$(mktemp -d)
status=0
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
ASAN_OPTIONS=detect_leaks=0:log_path=$logs/asan \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan \
    "$venv/bin/python" -m pytest -q tests --ignore=tests/test_against_pytorch.py \
    -k "not lenet5_matches_torch and not maxpool_ties_match_torch and not short_training and not no_leaks" "$@" \
    || status=$?
if compgen -G "$logs/*" > /dev/null; then
    cat "$logs"/*
    echo "sanitizer reports above" >&2
    exit 1
fi
exit $status
