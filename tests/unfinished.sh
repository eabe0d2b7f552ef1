#!/usr/bin/env bash
# Called by tests/run.sh when its bound on the test run fired: names the test
# binary that was running and its tests that had not finished, those libtest
# reported running for over 60 seconds first.
# Usage: tests/unfinished.sh LOG SECONDS
set -uo pipefail
log=$1
limit=$2
running=$(grep -E '^ +Running ' "$log" | tail -1)
bin=$(printf '%s\n' "$running" | sed -n 's/.*(\(.*\))$/\1/p')
echo "tests/run.sh: the test run passed its bound of ${limit}s (MESHGATE_SUITE_TIMEOUT) in:${running#*Running}"
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "tests/run.sh: no test binary was running (cargo itself)"
  exit 0
fi
# The results printed since that binary started.
since=$(awk -v r="$running" '$0 == r { buf = "" } { buf = buf $0 "\n" } END { printf "%s", buf }' "$log")
done_tests=$(printf '%s' "$since" | sed -n 's/^test \(.*\) \.\.\. .*/\1/p' | sort -u)
long=$(printf '%s' "$since" | sed -n 's/^test \(.*\) has been running for over .*/\1/p' | sort -u)
all=$("$bin" --list 2>/dev/null | sed -n 's/: test$//p' | sort -u)
unfinished=$(comm -23 <(printf '%s\n' "$all") <(printf '%s\n' "$done_tests") | sed '/^$/d')
stuck=$(comm -12 <(printf '%s\n' "$long") <(printf '%s\n' "$unfinished") | sed '/^$/d')
if [ -n "$stuck" ]; then
  echo "tests/run.sh: running when the bound fired (each over 60 s):"
  printf '  %s\n' $stuck
fi
echo "tests/run.sh: not finished in that binary (running, or not started yet):"
printf '  %s\n' $unfinished
