#!/usr/bin/env bash
# Run every test suite of the project and end with one total line (the README's test command calls this).
#   bash scripts/test.sh              pytest (Python server, CLI, client), then the plugins' suites
#   bash scripts/test.sh -k upload    extra arguments go to pytest only
# Suites: pytest; the Unreal plugin's C++ core (GoogleTest via ctest, scripts/test_unreal.sh); the Unity
# package's C# core (NUnit under mono, scripts/test_unity.sh). Each plugin script builds what it needs and
# prints its own 'LANG: N passed, N failed' line. Any failure in any suite makes this script fail.
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0; failed=0; status=0
count() {  # add the counts of one suite's closing line: "$1" = passed, "$2" = failed
    passed=$((passed + ${1:-0})); failed=$((failed + ${2:-0}))
}

log=$(mktemp); trap 'rm -f "$log"' EXIT
.venv/bin/python -m pytest "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
summary=$(grep -E '[0-9]+ (passed|failed|errors?|skipped|deselected).* in [0-9.]+s' "$log" | tail -n 1)
p=$(grep -oE '[0-9]+ passed' <<<"$summary" | grep -oE '[0-9]+')
f=0; for n in $(grep -oE '[0-9]+ (failed|errors?)' <<<"$summary" | grep -oE '[0-9]+'); do f=$((f + n)); done
count "${p:-0}" "$f"
(( rc != 0 )) && status=1

for suite in scripts/test_unreal.sh scripts/test_unity.sh; do
    [[ -f $suite ]] || continue
    bash "$suite" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    line=$(grep -E '^[A-Za-z+#]+: [0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+'); f=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+')
    if [[ -z $line ]]; then echo "$suite printed no summary line"; f=1; fi
    count "${p:-0}" "${f:-0}"
    (( rc != 0 )) && status=1
done

(( status != 0 && failed == 0 )) && failed=1   # a suite failed without counting it (build error, crash)
echo "total: $passed passed, $failed failed"
exit $status
