"""Importers of common video data set formats into the kit's JSONL manifest.

    python -m vtok_lit.data.importers FORMAT SOURCE -o manifest.jsonl [options]
    vtok-lit import FORMAT SOURCE -o manifest.jsonl [options]

Formats: ``llava`` (video conversation JSON), ``webvid`` (CSV), ``msrvtt-qa`` / ``msvd-qa`` and
``activitynet-qa`` (open-ended QA JSON), ``mvbench`` (multiple choice JSON), ``caption-folder`` (a
folder of videos with caption ``.txt`` files). Every video is checked (it exists, decodes and holds
the frames the sampling options ask for) and a report of what was kept and dropped, and why, is
printed before the manifest is written.
"""

from vtok_lit.data.importers.check import ClipSampling, Entry, ImportReport, check_entries
from vtok_lit.data.importers.cli import FORMATS, main, run_import

__all__ = ["FORMATS", "ClipSampling", "Entry", "ImportReport", "check_entries", "main", "run_import"]
