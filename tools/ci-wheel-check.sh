#!/usr/bin/env bash
# The Dockerfile's build and install steps, without Docker (CI has no engine):
# build the wheel from exactly what the image's build context holds, install it
# into a fresh virtualenv with constraints.txt, and run the image's three
# entry points from it. Fails when a module is missing from the wheel, a
# dependency is undeclared or unpinned, or an entry point does not start.
#
# Usage: tools/ci-wheel-check.sh   (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The .dockerignore allow-list: a file the wheel needs but the image would not get fails here too.
mkdir "$work/src"
tar --exclude=__pycache__ --exclude='*.egg-info' -cf - pyproject.toml README.md constraints.txt operator \
  | tar -xf - -C "$work/src"

timeout 300 "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$work/src"
# As in the image: a virtualenv without pip or setuptools, filled from outside.
timeout 60 "$PYTHON" -m venv --without-pip "$work/venv"
timeout 600 "$PYTHON" -m pip --python "$work/venv/bin/python" install --quiet --only-binary=:all: \
  -c "$work/src/constraints.txt" "$work"/dist/*.whl
"$PYTHON" -m pip --python "$work/venv/bin/python" check

# Every installed distribution must be pinned, or the image is not reproducible.
"$work/venv/bin/python" - "$work/src/constraints.txt" <<'EOF'
import re
import sys
from importlib.metadata import distributions


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


pins = {}
for line in open(sys.argv[1]):
    name, sep, version = line.split("#")[0].strip().partition("==")
    if sep:
        pins[norm(name)] = version.strip()
ours = "scheduledbot-operator"
unpinned = sorted(
    f"{d.metadata['Name']}=={d.version}"
    for d in distributions()
    if norm(d.metadata["Name"]) != ours and pins.get(norm(d.metadata["Name"])) != d.version
)
if unpinned:
    sys.exit(f"installed but not pinned in constraints.txt: {', '.join(unpinned)}")
EOF

# From an empty directory, so that nothing is imported from the source tree.
cd "$work"
export PATH="$work/venv/bin:$PATH"
timeout 60 scheduledbot-operator --help >/dev/null
timeout 60 scheduledbot-agent --help >/dev/null
timeout 60 python -c "import scheduledbot.demo_bot"
echo "ci-wheel-check: the wheel installs with constraints.txt and its entry points start"
