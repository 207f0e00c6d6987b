"""``python -m vtok_lit.data.importers FORMAT SOURCE -o manifest.jsonl``."""

import sys

from vtok_lit.data.importers.cli import main

sys.exit(main())
