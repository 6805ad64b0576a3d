"""Golden loss trajectories, the way torchtune pins its recipes: each recipe's shared test run (a few CPU
steps at a fixed seed, one of the session fixtures) must log exactly these loss values, term by term.

A change of convention that still trains (another KL reduction, a temperature applied twice, a term
dropped or added) moves these numbers and fails here. A change that moves them on purpose updates them
in the same commit, saying why. To print the current values of every recipe:

    SKD_GOLDEN_PRINT=1 python -m pytest tests/test_golden_trajectories.py -s -q
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Compared keys: the total loss, every logged term (loss/...) and every weight (weight/...).
TOLERANCE = 1e-4

# recipe -> (session fixture holding a finished run, {step: {key: value}})
GOLDEN: dict[str, tuple[str, dict[int, dict[str, float]]]] = {
    'asr-ctc': ('trained_run', {
        1: {'loss': 5.785115, 'loss/ctc_teacher': 5.673018, 'loss/ctc_student': 5.719377, 'weight/alpha': 0.3, 'loss/kd': 0.3272976},
        2: {'loss': 6.638366, 'loss/ctc_teacher': 6.584392, 'loss/ctc_student': 6.426723, 'weight/alpha': 0.3, 'loss/kd': 0.3375814},
        3: {'loss': 7.83673, 'loss/ctc_teacher': 7.707072, 'loss/ctc_student': 7.821929, 'weight/alpha': 0.3, 'loss/kd': 0.3173378},
        4: {'loss': 6.134837, 'loss/ctc_teacher': 5.831862, 'loss/ctc_student': 6.531204, 'weight/alpha': 0.3, 'loss/kd': 0.3105729},
        5: {'loss': 7.626322, 'loss/ctc_teacher': 7.159059, 'loss/ctc_student': 8.429891, 'weight/alpha': 0.3, 'loss/kd': 0.2867104},
        6: {'loss': 9.025524, 'loss/ctc_teacher': 7.979171, 'loss/ctc_student': 11.13577, 'weight/alpha': 0.3, 'loss/kd': 0.3312473},
    }),
    'nlg-smooth': ('nlg_smooth_run', {
        1: {'loss': 6.019028, 'loss/ce': 5.964724, 'loss/prior': 6.120541, 'weight/alpha': 0.381361, 'weight/prior_generation': 0.0},
        2: {'loss': 6.001895, 'loss/ce': 5.957529, 'loss/prior': 6.105669, 'weight/alpha': 0.3846857, 'weight/prior_generation': 0.0},
        3: {'loss': 5.949996, 'loss/ce': 5.871117, 'loss/prior': 6.083673, 'weight/alpha': 0.3898479, 'weight/prior_generation': 0.0},
        4: {'loss': 5.81549, 'loss/ce': 5.657757, 'loss/prior': 6.052133, 'weight/alpha': 0.3966264, 'weight/prior_generation': 0.0},
        5: {'loss': 5.003376, 'loss/ce': 5.444645, 'loss/prior': 4.254125, 'weight/alpha': 0.4067644, 'weight/prior_generation': 1.0},
        6: {'loss': 4.964837, 'loss/ce': 5.400015, 'loss/prior': 4.244982, 'weight/alpha': 0.4087107, 'weight/prior_generation': 1.0},
    }),
    'nlp-embed': ('nlp_embed_run', {
        1: {'loss': 4.604629, 'loss/ce': 4.605237, 'loss/soft': 4.60402, 'weight/beta': 0.5},
        2: {'loss': 4.61592, 'loss/ce': 4.617612, 'loss/soft': 4.614228, 'weight/beta': 0.5},
        3: {'loss': 4.60844, 'loss/ce': 4.609712, 'loss/soft': 4.607169, 'weight/beta': 0.5},
        4: {'loss': 4.613212, 'loss/ce': 4.614515, 'loss/soft': 4.611909, 'weight/beta': 0.5},
        5: {'loss': 4.60577, 'loss/ce': 4.605738, 'loss/soft': 4.605803, 'weight/beta': 0.5},
        6: {'loss': 4.60444, 'loss/ce': 4.604572, 'loss/soft': 4.604308, 'weight/beta': 0.5},
    }),
    'retrieval': ('retrieval_run', {
        5: {'loss': 4.696418, 'loss/dense': 2.973627, 'loss/sparse': 4.684517, 'loss/integrated': 4.074428, 'loss/reg_q': 1.913139, 'loss/reg_d': 2.085753, 'weight/eta_q': 6.25e-05, 'weight/eta_d': 6.25e-05, 'loss/kd_dense': 8.569187, 'loss/kd_sparse': 4.788021},
        10: {'loss': 4.427818, 'loss/dense': 2.99899, 'loss/sparse': 4.27006, 'loss/integrated': 4.188907, 'loss/reg_q': 5.03695, 'loss/reg_d': 5.523515, 'weight/eta_q': 0.0003164063, 'weight/eta_d': 0.0003164063, 'loss/kd_dense': 7.31132, 'loss/kd_sparse': 4.72775},
        15: {'loss': 4.206447, 'loss/dense': 3.332741, 'loss/sparse': 3.817911, 'loss/integrated': 4.269854, 'loss/reg_q': 7.546407, 'loss/reg_d': 8.117684, 'weight/eta_q': 0.000765625, 'weight/eta_d': 0.000765625, 'loss/kd_dense': 5.805138, 'loss/kd_sparse': 4.946996},
        20: {'loss': 4.163071, 'loss/dense': 3.681264, 'loss/sparse': 3.604503, 'loss/integrated': 4.292828, 'loss/reg_q': 8.811611, 'loss/reg_d': 9.279927, 'weight/eta_q': 0.001, 'weight/eta_d': 0.001, 'loss/kd_dense': 5.124778, 'loss/kd_sparse': 5.194134},
        25: {'loss': 4.115829, 'loss/dense': 3.568409, 'loss/sparse': 3.514246, 'loss/integrated': 4.250988, 'loss/reg_q': 9.330686, 'loss/reg_d': 9.500486, 'weight/eta_q': 0.001, 'weight/eta_d': 0.001, 'loss/kd_dense': 5.088445, 'loss/kd_sparse': 5.221276},
        30: {'loss': 4.121553, 'loss/dense': 3.578958, 'loss/sparse': 3.531105, 'loss/integrated': 4.271347, 'loss/reg_q': 9.091517, 'loss/reg_d': 9.283417, 'weight/eta_q': 0.001, 'weight/eta_d': 0.001, 'loss/kd_dense': 5.097864, 'loss/kd_sparse': 5.189381},
    }),
    'sleep': ('sleep_trained_run', {
        1: {'loss': 1.90747, 'loss/ce': 1.825904, 'loss/kd': 0.08156555, 'weight/kd': 1.0},
        2: {'loss': 1.785518, 'loss/ce': 1.702063, 'loss/kd': 0.08345576, 'weight/kd': 1.0},
        3: {'loss': 1.794414, 'loss/ce': 1.715417, 'loss/kd': 0.07899663, 'weight/kd': 1.0},
        4: {'loss': 1.738067, 'loss/ce': 1.660614, 'loss/kd': 0.07745363, 'weight/kd': 1.0},
        5: {'loss': 1.633291, 'loss/ce': 1.561438, 'loss/kd': 0.07185254, 'weight/kd': 1.0},
        6: {'loss': 1.601698, 'loss/ce': 1.558521, 'loss/kd': 0.04317689, 'weight/kd': 1.0},
    }),
}


def logged_values(run_dir: Path) -> dict[int, dict[str, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {row["step"]: {k: v for k, v in row.items() if k == "loss" or k.startswith(("loss/", "weight/"))}
            for row in rows if row["split"] == "train"}


@pytest.mark.parametrize("recipe", sorted(GOLDEN))
def test_golden_loss_trajectory(recipe: str, request: pytest.FixtureRequest) -> None:
    fixture, expected = GOLDEN[recipe]
    logged = logged_values(request.getfixturevalue(fixture))
    if os.environ.get("SKD_GOLDEN_PRINT"):
        print(f"\n{recipe!r}: ({fixture!r}, {json.dumps({s: logged[s] for s in sorted(logged)[:6]})}),")
    for step, values in expected.items():
        assert step in logged, f"{recipe}: step {step} was not logged"
        assert set(logged[step]) == set(values), f"{recipe} step {step}: logged terms {sorted(logged[step])}"
        for key, value in values.items():
            assert logged[step][key] == pytest.approx(value, rel=TOLERANCE, abs=TOLERANCE), \
                f"{recipe} step {step} {key}: {logged[step][key]!r} != pinned {value!r}"
