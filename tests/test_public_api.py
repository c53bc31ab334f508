import subprocess
import sys

import parallel_kit as pk


def test_every_public_name_resolves():
    for name in pk.__all__:
        assert getattr(pk, name) is not None, name


def test_import_is_light():
    code = ("import sys, parallel_kit; heavy = [m for m in ('fastapi', 'uvicorn', 'ray', "
            "'matplotlib', 'pandas') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.strip()
    assert out == "[]"


def test_headline_prediction_through_the_public_api():
    assert pk.theory.predict("sequential", [10] * 5, workers=1).makespan_s == 50
    assert pk.theory.predict("ray", [10] * 5, workers=3).makespan_s == 20
