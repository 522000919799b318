"""The test `pytest --harness-model PATH` parametrises (harness/pytest_plugin.py adds this file to the
collection): one test per case of each of your models, as `harness check` would run it."""


def test_harness_model(harness_model_case, harness_model_run):
    harness_model_run(harness_model_case)
