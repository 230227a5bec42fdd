# SPDX-License-Identifier: Apache-2.0
"""The fault suite's table: every case of ``tests.faults.specs`` and ``tests.faults.files``, and the
ones still failing because their fix belongs to another module.

Each case's command must end in one ``Error:`` line naming the field or file (``tests.faults.harness``).
"""

from tests.faults.files import BUNDLE_CASES, CHECKPOINT_CASES, DATASET_CASES
from tests.faults.specs import OVERRIDE_CASES, SPEC_CASES

CASES = SPEC_CASES + OVERRIDE_CASES + DATASET_CASES + CHECKPOINT_CASES + BUNDLE_CASES

# Cases that still fail because their fix belongs to another module's owner: case id -> what must change
# where. The tests mark them xfail(strict=True): the day one is fixed, its entry must go.
_BUNDLE_MANIFEST = (
    "haloae/bundle.py load_bundle: check bundle.json's fields (an object; threshold a finite number; "
    "scoring one the model has) as a BundleError naming bundle.json"
)
_RESUME = (
    "haloae/train.py: a resumed checkpoint.pt whose weights do not fit the run's config must be a "
    "CheckpointError naming it (read_resume_state, before the data is decoded), not load_state_dict's RuntimeError"
)
_FIGURES = (
    "analysis/figures.py make_figures: load and score the run's best.pt before writing any PNG into --out, "
    "with a Predictor source naming the run and its artifact (not 'the model')"
)
_PREDICT = "analysis/predict.py predict_files: create --out only after predictor.predict succeeded"
KNOWN_FAULTS = {
    "bundle-manifest-a-list": _BUNDLE_MANIFEST,
    "bundle-manifest-no-threshold": _BUNDLE_MANIFEST,
    "bundle-manifest-threshold-text": _BUNDLE_MANIFEST,
    "bundle-manifest-threshold-nan": _BUNDLE_MANIFEST,
    "bundle-manifest-unknown-scoring": _BUNDLE_MANIFEST,
    "bundle-weights-nan-rehashed": _PREDICT,
    "checkpoint-resume-weights-misfit-config": _RESUME,
    "override-resume-other-widths": _RESUME,
    "checkpoint-figures-code-pickle": _FIGURES,
    "checkpoint-figures-overwritten": _FIGURES,
    "checkpoint-figures-nan-weights": _FIGURES,
}
