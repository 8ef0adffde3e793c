#!/usr/bin/env bash
# Create the peers' virtual environments for the benchmarks (bench/run_all.py). Idempotent: a venv
# whose stamp matches its pinned requirements is left alone, anything else is (re)built.
#
#   bash bench/peers/setup.sh            # both peers
#   bash bench/peers/setup.sh flordb     # one peer
#
# Peers live outside the repository, in $RETROLOG_PEERS (default /tmp/retrolog-peers), each in its
# own venv so their dependencies never meet ours. Everything comes from PyPI (torch from the local
# wheel mirror); nothing is downloaded at benchmark time. mlflow is pinned to 3.17.2 because
# 3.18.0 cannot be installed here (its mlflow-skinny==3.18.0 is not served).
set -euo pipefail

PEERS_DIR="${RETROLOG_PEERS:-/tmp/retrolog-peers}"
PYTHON="${PYTHON:-python3}"
TORCH="torch==2.13.0"
SKLEARN="scikit-learn==1.9.1"

declare -A REQS=(
  [flordb]="flordb==4.0.1 $TORCH $SKLEARN"
  [mlflow]="mlflow==3.17.2 $TORCH $SKLEARN"
)

# pip warns about every package the machine's extra local indexes lack; keep the rest.
quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }

build() {
  local name="$1" reqs="${REQS[$1]}" dir="$PEERS_DIR/$1"
  local stamp="$dir/.bench-stamp"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$reqs" && -x "$dir/bin/python" ]]; then
    echo "peers: $name is up to date ($dir)"
    return
  fi
  echo "peers: building $name in $dir: $reqs"
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  "$dir/bin/pip" install -q --upgrade pip 2>&1 | quiet
  # shellcheck disable=SC2086  # word splitting of the requirement list is intended
  "$dir/bin/pip" install -q $reqs 2>&1 | quiet
  "$dir/bin/pip" freeze > "$dir/requirements.lock"
  echo "$reqs" > "$stamp"
  echo "peers: $name ready"
}

mkdir -p "$PEERS_DIR"
if [[ $# -eq 0 ]]; then
  set -- "${!REQS[@]}"
fi
for peer in "$@"; do
  if [[ -z "${REQS[$peer]+x}" ]]; then
    echo "peers: unknown peer '$peer' (known: ${!REQS[*]})" >&2
    exit 2
  fi
  build "$peer"
done
