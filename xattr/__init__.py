"""xattr: token-level explanations of fine-tuned transformer text models over whole corpora.

The pure library: models, attribution methods and metrics. It never imports prefect, mlflow,
storage, tasks or flows (a test checks this).
"""

from __future__ import annotations

__version__ = "0.1.0"
#: The distribution this package ships in; the PyPI name ``xattr`` is an unrelated project.
__distribution__ = "xattr-explain"
