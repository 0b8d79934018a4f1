# Sourced by ./run-relay and ./run-tests: makes sure `uv` is available and the project environment matches uv.lock.
# A machine with only Python gets uv in a private virtual environment (.tools/), so nothing system-wide changes.
if command -v uv >/dev/null 2>&1; then
  UV=uv
else
  if [ ! -x .tools/bin/uv ]; then
    echo "Installing uv (the Python package manager) into .tools/ ..." >&2
    python3 -m venv .tools
    .tools/bin/python -m pip install --quiet --disable-pip-version-check uv
  fi
  UV=.tools/bin/uv
fi
"$UV" sync --frozen --quiet
