"""``python -m mae_hlvm <step>``: run a step with the code of the working copy it runs in.

The package is installed in editable mode, pointing at one checkout's ``src/``. A stage run
from another copy of the repository (a DVC experiment's temporary executor, a git worktree,
a test's copy) must run that copy's code: it is the code its dvc.lock hashes as deps. So
when the current folder holds a ``src/mae_hlvm`` other than the imported one, the step is
re-executed once with that ``src`` first on the path.
"""

import os
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_LOCAL = Path.cwd() / "src" / "mae_hlvm"
if _LOCAL.is_dir() and _LOCAL.resolve() != _HERE and not os.environ.get("MAE_HLVM_SOURCE"):
    path = [str(_LOCAL.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), MAE_HLVM_SOURCE=str(_LOCAL.parent))
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "mae_hlvm", *sys.argv[1:]], env)

from mae_hlvm.workflow.cli import main  # noqa: E402 - after the re-exec decision

raise SystemExit(main())
