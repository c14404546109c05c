"The soak harness of issue 20: `python -m tests.soak [--short]` (see soak.py)."
