"""Writes constraints-test.txt: every distribution `pip install -e '.[test]'` pulls (the closure of lstm-inspect's
base and test requirements, markers evaluated on this machine), pinned to the version installed here. Run it after a
deliberate upgrade: `python .ci/lock_test_extra.py > constraints-test.txt`."""
import sys
from pathlib import Path
from importlib import metadata
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
import tomllib
project = tomllib.load(open(Path(__file__).resolve().parent.parent / 'pyproject.toml', 'rb'))['project']
todo = [Requirement(r) for r in project['dependencies'] + project['optional-dependencies']['test']]
seen = {}
while todo:
    req = todo.pop()
    name = canonicalize_name(req.name)
    if req.marker and not req.marker.evaluate({'extra': ''}):
        continue
    key = (name, tuple(sorted(req.extras)))
    if key in seen: continue
    try:
        dist = metadata.distribution(req.name)
    except metadata.PackageNotFoundError:
        print('# not installed:', req, file=sys.stderr); continue
    seen[key] = dist
    for r in dist.requires or []:
        rr = Requirement(r)
        envs = [{'extra': e} for e in req.extras] or [{'extra': ''}]
        if rr.marker and not any(rr.marker.evaluate(env) for env in envs):
            continue
        todo.append(rr)
pins = {}
for (name, _), dist in seen.items():
    version = dist.version.split('+')[0]   # local labels (torch's +cpu) are not on PyPI; ==X matches X+cpu
    pins[name] = version
print("# The test extra's dependencies, pinned (written by .ci/lock_test_extra.py from the versions CI was run with).")
print("# .ci/run and the README install with: pip install -e '.[test]' -c constraints-test.txt")
for name in sorted(pins):
    print(f"{name}=={pins[name]}")
