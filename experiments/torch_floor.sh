#!/bin/bash
# Experiment. Its result: docs/scaling.md ("Which torch").
#
# The oldest torch on which the quick tier passes: each release in a throw-away venv under /tmp, the package
# installed editable from this checkout, `pytest -m "not slow"` run from it.
#
#     bash experiments/torch_floor.sh 2.4.1 2.5.1 2.6.0      # then read /tmp/floor-VERSION.log
#
# PyPI's Linux wheels of these releases are CUDA builds (about 0.8 GB, plus the nvidia-* wheels): they run on a
# CPU too.
set -u
cd "$(dirname "$0")/.."
for v in "$@"; do
  V=/tmp/floor-$v
  if ! $V/bin/python -c "import torch, pytest" 2>/dev/null; then
    rm -rf "$V" && python3 -m venv "$V"
    # the package's other requirements, without its torch bound (which would upgrade the torch under test)
    deps=$(python3 -c 'import re, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(d for d in p["dependencies"] + p["optional-dependencies"]["test"] if re.split("[<>=!~ ]", d)[0] != "torch"))')
    "$V/bin/pip" install -q "torch==$v" && echo "$deps" | xargs "$V/bin/pip" install -q "torch==$v"
  fi
  "$V/bin/pip" install -q --no-deps -e .
  "$V/bin/python" -c "import torch; assert torch.__version__.startswith('$v'), torch.__version__" || continue
  "$V/bin/python" -m pytest -q -m "not slow" -p no:cacheprovider tests > "/tmp/floor-$v.log" 2>&1
  echo "torch $v: $(tail -1 /tmp/floor-$v.log)"
done
