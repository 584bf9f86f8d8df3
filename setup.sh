#!/usr/bin/env bash
# Development / CI setup for the SegTalker node pack. Idempotent: run it again any time.
#
#   bash setup.sh            # create or update .venv in the repository root
#   bash setup.sh --force    # reinstall the Python requirements even if nothing changed
#   VENV=.venv313 PYTHON=python3.13 bash setup.sh   # a second environment, here on Python 3.13
#                                                   # (.ci/run's second leg does exactly this)
#
# Environment variables:
#   VENV     the virtual environment's folder (default .venv; relative paths are taken from the
#            repository root);
#   PYTHON   the interpreter that creates it: a path or a command name (python3.13). A name that
#            does not run (a pyenv shim of a version that is not selected) is also looked up in
#            pyenv's versions. An existing VENV of another Python minor version is recreated;
#   TORCH_INDEX_URL  a wheel index for torch/torchvision (see 2.).
#
# What it does:
#   1. VENV with Python 3.10-3.13 (python3.11 preferred when PYTHON is not set);
#   2. torch==2.14.1 + torchvision==0.29.1, pinned exactly because the real-ComfyUI tests run the
#      ComfyUI 0.3.75 server, which needs torchvision. (Inside ComfyUI you keep ComfyUI's own torch:
#      the pack lists no torch requirement.) Set TORCH_INDEX_URL to pick a wheel index, e.g.
#      https://download.pytorch.org/whl/cpu for the CPU-only build;
#   3. requirements.txt (the pack), requirements-dev.txt (tests), requirements-comfyui.txt (what the
#      vendored ComfyUI server needs to boot in the tests); on 3.13 everything but mediapipe (the
#      face models' test reference, no 3.13 wheel; requirements-dev.txt leaves it out there);
#   4. system tools the tests use: espeak-ng (synthetic speech) and sox; installed with apt-get when
#      run as root on a Debian/Ubuntu machine, otherwise the missing ones are printed.
#   5. the browser tests' tools (tests/test_browser_frontend.py): Debian's chromium (apt-get, as
#      root) and playwright-core (npm ci in tests/browser; needs Node.js >= 20 and npm).
# The pack is used from the repository root (tests put it on sys.path), so nothing is pip-installed
# from this repository itself.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
REPO_DIR="$(pwd)"
VENV="${VENV:-.venv}"
[[ "$VENV" == /* ]] || VENV="$REPO_DIR/$VENV"
VENV="${VENV%/}"
FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
REQ_FILES=(requirements.txt requirements-dev.txt requirements-comfyui.txt)
APT_PACKAGES=(espeak-ng sox)

SECONDS=0
step() { printf '\n==> [%3ds] %s\n' "$SECONDS" "$*"; }
die() { echo "setup.sh: $*" >&2; exit 1; }

py_ok() {  # is "$1" a Python 3.10-3.13 interpreter?
  "$1" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 13) else 1)' 2>/dev/null
}

# ---------------------------------------------------------------- 1. virtual environment
py_minor() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }

resolve_python() {  # PYTHON as given (path or command), else the pyenv installation it names
  local want="$1" cand root minor
  if [[ "$want" == */* ]]; then
    [[ -x "$want" ]] && py_ok "$want" && { echo "$want"; return 0; }
    return 1
  fi
  cand="$(command -v "$want" 2>/dev/null || true)"
  [[ -n "$cand" ]] && py_ok "$cand" && { echo "$cand"; return 0; }
  # pyenv installs every version, but its shim runs only the selected ones.
  if [[ "$want" =~ ^python(3\.[0-9]+)$ ]]; then
    minor="${BASH_REMATCH[1]}"
    root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
    for cand in $(ls -d "$root/versions/$minor".* 2>/dev/null | sort -V -r); do
      [[ -x "$cand/bin/python$minor" ]] && py_ok "$cand/bin/python$minor" \
        && { echo "$cand/bin/python$minor"; return 0; }
    done
  fi
  return 1
}

step "Python virtual environment ($VENV)"
PY=""
if [[ -n "${PYTHON:-}" ]]; then
  PY="$(resolve_python "$PYTHON")" || die "PYTHON=$PYTHON is not a Python 3.10-3.13 that runs here"
fi
if [[ -x "$VENV/bin/python" ]] && py_ok "$VENV/bin/python" \
   && { [[ -z "$PY" ]] || [[ "$(py_minor "$VENV/bin/python")" == "$(py_minor "$PY")" ]]; }; then
  echo "reusing $("$VENV/bin/python" --version)"
else
  if [[ -z "$PY" ]]; then
    for cand in python3.11 python3.12 python3.13 python3.10 python3; do
      if command -v "$cand" >/dev/null 2>&1 && py_ok "$(command -v "$cand")"; then
        PY="$(command -v "$cand")"; break
      fi
    done
  fi
  [[ -n "$PY" ]] || die "no Python 3.10-3.13 found (install python3.11, or set PYTHON=...)"
  if [[ -e "$VENV" ]]; then
    echo "existing $VENV is unusable or another Python version; recreating it"
    rm -rf "$VENV"
  fi
  echo "creating $VENV with $PY ($("$PY" --version))"
  "$PY" -m venv "$VENV" || die "python -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
fi
VPY="$VENV/bin/python"

# ---------------------------------------------------------------- 2-3. Python packages
# Skip pip entirely when nothing changed since the last successful run.
STAMP="$VENV/.segtalker-setup.sha256"
want_stamp="$( { "$VPY" --version; printf '%s\n' "${TORCH_PINS[@]}" "${TORCH_INDEX_URL:-}"; cat "${REQ_FILES[@]}"; } | sha256sum | cut -d' ' -f1)"
if [[ "$FORCE" == 0 && -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" ]]; then
  step "Python packages: unchanged since the last run (bash setup.sh --force to reinstall)"
else
  rm -f "$STAMP"
  step "upgrading pip"
  "$VPY" -m pip install --quiet --upgrade pip

  step "installing ${TORCH_PINS[*]}"
  torch_args=()
  [[ -n "${TORCH_INDEX_URL:-}" ]] && torch_args=(--index-url "$TORCH_INDEX_URL")
  "$VPY" -m pip install --quiet "${torch_args[@]}" "${TORCH_PINS[@]}"

  step "installing ${REQ_FILES[*]}"
  req_args=()
  for f in "${REQ_FILES[@]}"; do
    [[ -f "$f" ]] || die "$f is missing"
    req_args+=(-r "$f")
  done
  # Keep the torch pins while resolving, so no requirement can move torch.
  "$VPY" -m pip install --quiet "${req_args[@]}" "${TORCH_PINS[@]}"
  echo "$want_stamp" > "$STAMP"
fi

# ---------------------------------------------------------------- 4. system tools
step "system tools: ${APT_PACKAGES[*]}"
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if (( ${#missing[@]} == 0 )); then
  echo "present: ${APT_PACKAGES[*]}"
elif [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "MISSING: ${missing[*]} -- the speech tests need them. Install with:"
  echo "    sudo apt-get install ${missing[*]}      (or your system's package manager)"
fi

# ---------------------------------------------------------------- check
step "checking the environment"
"$VPY" - <<'EOF'
import importlib
import sys
mods = ["torch", "torchvision", "numpy", "cv2", "av", "librosa", "soundfile",
        "pocketsphinx", "safetensors", "pytest", "aiohttp", "comfyui_frontend_package"]
if sys.version_info < (3, 13):  # the face models' reference in the tests; no wheel for 3.13
    mods.append("mediapipe")
bad = []
for m in mods:
    try:
        importlib.import_module(m)
    except Exception as exc:  # noqa: BLE001 - report every failure
        bad.append(f"{m}: {exc}")
import torch, torchvision
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
if bad:
    raise SystemExit("setup.sh: these modules do not import:\n  " + "\n  ".join(bad))
print("all key modules import")
EOF
# ---------------------------------------------------------------- 5. browser-test tools
# Separate from the Python part above: headless Chromium and playwright-core for
# tests/test_browser_frontend.py (which fails under SEGTALKER_REQUIRE_COMFYUI=1 without them).
BROWSER_DIR="$REPO_DIR/tests/browser"
CHROMIUM_BIN="${CHROMIUM:-/usr/bin/chromium}"
step "browser tests: chromium and playwright-core"
if [[ -x "$CHROMIUM_BIN" ]]; then
  echo "present: $("$CHROMIUM_BIN" --version 2>/dev/null | head -1)"
elif [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  [[ -x "$CHROMIUM_BIN" ]] || die "apt-get installed chromium but $CHROMIUM_BIN is not there"
else
  echo "MISSING: chromium -- the browser tests need it. Install with:"
  echo "    sudo apt-get install chromium      (or set CHROMIUM=/path/to/chromium)"
fi
if command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then
  NPM_STAMP="$BROWSER_DIR/node_modules/.segtalker-npm.sha256"
  want_npm="$( { node --version; cat "$BROWSER_DIR/package-lock.json"; } | sha256sum | cut -d' ' -f1)"
  if [[ "$FORCE" == 0 && -f "$NPM_STAMP" && "$(cat "$NPM_STAMP")" == "$want_npm" ]]; then
    echo "playwright-core: unchanged since the last npm ci"
  else
    echo "npm ci in $BROWSER_DIR ($(node --version))"
    (cd "$BROWSER_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want_npm" > "$NPM_STAMP"
  fi
else
  echo "MISSING: Node.js/npm -- the browser tests need Node.js >= 20 with npm, then:"
  echo "    (cd tests/browser && npm ci)"
fi

step "done in ${SECONDS}s. Run the tests with: ${VENV#"$REPO_DIR/"}/bin/python -m pytest -q"
