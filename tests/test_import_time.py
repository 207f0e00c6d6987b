"""``vtok-lit --help`` stays quick: the kit imports no heavy optional library until a run needs it."""

from __future__ import annotations

import json
import subprocess
import sys

# Imported inside the functions that use them: video decoding, open_clip encoders, Hugging Face LMs
# and tokenizers, plotting.
HEAVY = ("decord", "av", "open_clip", "transformers", "matplotlib")

# Lightning imports torchmetrics, which imports transformers and matplotlib when they are installed;
# what the kit adds is measured on top of that.
PROBE = """
import json, sys
import lightning.pytorch.cli, torchmetrics
before = set(sys.modules)
from vtok_lit.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
print(json.dumps({"added": sorted(set(sys.modules) - before), "all": sorted(sys.modules)}))
"""


def test_the_cli_and_its_help_import_no_heavy_library() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    modules = json.loads(done.stdout.strip().splitlines()[-1])
    added = [name for name in modules["added"] if name.split(".")[0] in HEAVY]
    assert not added, f"importing vtok_lit.cli and printing --help imported {added[:10]}"
    for name in ("decord", "av", "open_clip"):
        assert name not in modules["all"], f"{name} is imported by vtok-lit --help"
